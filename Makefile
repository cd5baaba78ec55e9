# Every target creates or refreshes the virtualenv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PARAMS ?= params.yaml
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help venv demo test test-slow bench-data sample clean

help:
	@echo "make demo        run the pipeline on the embedded sample"
	@echo "make test        run the test suite (creates .venv first)"
	@echo "make test-slow   run the slow tests too"
	@echo "make bench-data  data-stage benchmark at the paper's scale (~3M interactions)"
	@echo "make sample      regenerate the embedded sample (seeded)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmrec ingest --params $(PARAMS)
	$(BIN)/llmrec validate --params $(PARAMS)
	$(BIN)/llmrec prepare --params $(PARAMS)
	$(BIN)/llmrec train --params $(PARAMS) --auto-resume
	$(BIN)/llmrec train --model sasrec --params $(PARAMS) --auto-resume
	$(BIN)/llmrec evaluate --params $(PARAMS) --models llmrec,zero_shot,sasrec,popularity

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench-data: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py

sample: $(STAMP)
	$(BIN)/python scripts/make_sample.py --out data/sample

clean:
	rm -rf data/interim data/validated data/prepared reports/validation runs
