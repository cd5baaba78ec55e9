from pathlib import Path

import pytest

from llmrec_core.config import ConfigError, load_params


def _write(tmp_path, text):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


SOURCE = """
data:
  sources:
    - {name: s, format: amazon2018, domain: Books, interactions: r.csv, items: m.json}
"""


def test_valid_params_resolve_paths_against_the_file(tmp_path):
    params = load_params(_write(tmp_path, SOURCE))
    assert params.resolve(params.data.sources[0].items) == (tmp_path / "m.json").resolve()
    assert params.prepare.min_user_interactions == 5


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"prepare\.min_users: unknown key"):
        load_params(_write(tmp_path, SOURCE + "prepare:\n  min_users: 3\n"))


def test_unknown_nested_key_in_a_list(tmp_path):
    text = SOURCE.replace("items: m.json}", "items: m.json, colour: red}")
    with pytest.raises(ConfigError, match=r"data\.sources\.0\.colour: unknown key"):
        load_params(_write(tmp_path, text))


def test_ill_typed_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"validation\.max_bad_fraction"):
        load_params(_write(tmp_path, SOURCE + "validation:\n  max_bad_fraction: lots\n"))


def test_out_of_range_value(tmp_path):
    with pytest.raises(ConfigError, match=r"prepare\.tail_fraction"):
        load_params(_write(tmp_path, SOURCE + "prepare:\n  tail_fraction: 1.5\n"))


def test_frozen_layers_apply_to_full_fine_tuning_only(tmp_path):
    path = _write(tmp_path, SOURCE)
    assert load_params(path, ["train.frozen_layers=3"]).train.frozen_layers == 3
    with pytest.raises(ConfigError, match="frozen_layers applies to full fine-tuning"):
        load_params(path, ["train.frozen_layers=3", "train.tuning=lora"])


def test_fixed_domain_is_required(tmp_path):
    with pytest.raises(ConfigError, match="domain"):
        load_params(_write(tmp_path, SOURCE.replace("domain: Books, ", "")))


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.sources\.0\.format"):
        load_params(_write(tmp_path, SOURCE.replace("amazon2018", "amazon1999")))


def test_overrides_are_typed_and_checked(tmp_path):
    path = _write(tmp_path, SOURCE)
    params = load_params(path, ["train.tuning=lora", "train.lora.r=4", "eval.ks=[5, 20]"])
    assert (params.train.tuning, params.train.lora.r, params.eval.ks) == ("lora", 4, [5, 20])
    with pytest.raises(ConfigError, match=r"train\.tuning"):
        load_params(path, ["train.tuning=qlora"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_params(path, ["train.tunning=lora"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_params(path, ["train"])


def test_experiment_applies_its_settings_and_gets_its_own_run_dirs(tmp_path):
    text = SOURCE + """
train: {run_dir: runs/base}
experiments:
  - {name: lora-s2, set: {train.tuning: lora, train.setting: s2piao}}
  - {name: plain}
"""
    path = _write(tmp_path, text)
    params = load_params(path, experiment="lora-s2")
    assert (params.train.tuning, params.train.setting) == ("lora", "s2piao")
    assert params.resolve(params.train.run_dir) == (tmp_path / "runs" / "lora-s2").resolve()
    assert params.resolve(params.sasrec.run_dir) == (tmp_path / "runs" / "lora-s2" / "sasrec").resolve()
    assert load_params(path, ["train.lr=0.1"], experiment="plain").train.lr == 0.1
    with pytest.raises(ConfigError, match="not in `experiments`"):
        load_params(path, experiment="missing")


def test_compare_to_must_name_another_experiment(tmp_path):
    good = SOURCE + "experiments:\n  - {name: a}\n  - {name: b, compare_to: a}\n"
    assert load_params(_write(tmp_path, good)).experiments[1].compare_to == "a"
    for bad in ("  - {name: a}\n  - {name: b, compare_to: c}\n", "  - {name: a, compare_to: a}\n"):
        with pytest.raises(ConfigError, match="compare_to .* names no other experiment"):
            load_params(_write(tmp_path, SOURCE + "experiments:\n" + bad))


@pytest.mark.parametrize("name", ["params.yaml", "configs/ml-100k.yaml", "configs/sample-new-items.yaml"])
def test_the_shipped_configs_and_every_experiment_of_them_load(name):
    from lab.experiments import select_runs

    path = Path(__file__).resolve().parents[2] / name
    base = load_params(path)
    runs = select_runs(base, None)
    assert runs or name == "params.yaml"  # the product's default has no lab experiments
    assert all(load_params(path, experiment=run).train.run_dir.parent == base.train.run_dir.parent
                        for run in runs if run != "main")


def test_ml_1m_runs_ml_100k_s_configuration_frozen():
    """ml-1m confirms what ml-100k chose: every section a model reads is ml-100k's; only data, folders and the
    experiments differ (never tune on ml-1m), and ml-1m may take a stated sample of its users (a CPU budget)."""
    repo = Path(__file__).resolve().parents[2]
    small, large = load_params(repo / "configs/ml-100k.yaml"), load_params(repo / "configs/ml-1m.yaml")
    for section in ("prepare", "model", "train", "sasrec", "seqhead", "eval", "index"):
        a, b = getattr(small, section).model_dump(), getattr(large, section).model_dump()
        for config in (a, b):
            for key in ("run_dir", "user_sample", "user_sample_seed"):
                config.pop(key, None)
        assert a == b, f"configs/ml-1m.yaml's {section} differs from ml-100k's"
    confirm = {e.name: e for e in small.experiments if e.name.startswith("confirm")}
    for experiment in large.experiments:
        def own(sets: dict) -> dict:  # a data root names the dataset's own folder
            return {k: v for k, v in sets.items() if k != "data.root"}

        assert own(experiment.set) == own(confirm[experiment.name].set)  # the same confirmatory runs, other seeds
        assert experiment.set.get("data.root", "ml-1m").count("ml-1m") == 1
