"""Hostile input, case by case: ids exactly as written, bad values quarantined with their raw text, one error
path, a validation gate that cannot be walked around, whole-stage swaps and one writer per stage."""
import gzip
import json
import os
import subprocess
import sys
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from llmrec_core.cli import app
from llmrec_core.config import ConfigError, load_params
from llmrec_core.data.ingest import ingest
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.prepare import PreparationError, prepare
from llmrec_core.data.sources import InputError
from llmrec_core.data.stage import stage_output
from llmrec_core.data.validate import validate
from llmrec_core.errors import StageBusy

runner = CliRunner()
BOM = b"\xef\xbb\xbf"


def _table_source(d, inter: bytes, items: bytes, name="t", suffix="csv", **extra):
    d.mkdir(parents=True, exist_ok=True)
    (d / f"inter.{suffix}").write_bytes(inter)
    (d / f"items.{suffix}").write_bytes(items)
    columns = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", "title": "title"}
    if b"rating" in inter.split(b"\n")[0] or suffix != "csv":
        columns["rating"] = "rating"
    return {"name": name, "format": "table", "domain": "Shop", "interactions": str(d / f"inter.{suffix}"),
            "items": str(d / f"items.{suffix}"), "columns": columns, **extra}


def _interim(params):
    layout = DataLayout(params.data_root)
    return (pd.read_parquet(layout.interim / "interactions.parquet"), pd.read_parquet(layout.interim / "items.parquet"),
            pd.read_parquet(layout.interim / "quarantine.parquet"))


def test_byte_order_mark_keeps_zero_padded_ids_and_items_match(tmp_path, write_params):
    inter = BOM + b"user_id,item_id,timestamp,rating\n00013,0042,1400000000,5\n00013,0007,1400000100,4\n"
    items = BOM + b"item_id,title\n0042,The Answer\n0007,Licence to Kill\n"
    params = write_params([_table_source(tmp_path / "s", inter, items)])
    ingest(params)
    rows, catalog, quarantine = _interim(params)
    assert rows["user_id"].tolist() == ["00013", "00013"]
    assert sorted(catalog["item_id"]) == ["Shop:0007", "Shop:0042"]  # the interactions' ids meet their items
    assert set(rows["item_id"]) == set(catalog["item_id"]) and quarantine.empty


def test_ids_that_look_numeric_then_turn_into_strings(tmp_path, write_params):
    lines = [f"{i:05d},{i % 50},{1400000000 + i},3" for i in range(3000)] + ["u-x,i-y,1400009999,3"]
    inter = ("user_id,item_id,timestamp,rating\n" + "\n".join(lines) + "\n").encode()
    items = ("item_id,title\n" + "\n".join(f"{i},Item {i}" for i in range(50)) + "\ni-y,Late item\n").encode()
    params = write_params([_table_source(tmp_path / "s", inter, items)], data={"chunk_rows": 1000})
    ingest(params)
    rows, _, _ = _interim(params)
    assert rows["user_id"].iloc[0] == "00000" and rows["user_id"].iloc[-1] == "u-x"
    assert len(rows) == 3001


@pytest.mark.parametrize("kind", [pa.int8(), pa.uint32(), pa.int64()])
def test_parquet_integer_and_nullable_ids_are_their_digits(tmp_path, write_params, kind):
    d = tmp_path / "p"
    d.mkdir()
    users = pa.array([13, None, 7], type=kind)  # nullable: pandas would have made 13 into 13.0
    pq.write_table(pa.table({"user_id": users, "item_id": pa.array([42, 42, 7], type=kind),
                             "timestamp": pa.array([1400000000, 1400000001, 1400000002]),
                             "rating": pa.array([5.0, 4.0, 3.0])}), d / "inter.parquet")
    pq.write_table(pa.table({"item_id": pa.array([42, 7], type=kind), "title": ["A", "B"]}), d / "items.parquet")
    src = {**_table_source(d, b"", b"", suffix="unused")}
    src.update(interactions=str(d / "inter.parquet"), items=str(d / "items.parquet"))
    params = write_params([src])
    ingest(params)
    rows, catalog, _ = _interim(params)
    assert rows["user_id"].tolist()[::2] == ["13", "7"] and pd.isna(rows["user_id"].iloc[1])
    assert sorted(catalog["item_id"]) == ["Shop:42", "Shop:7"]


def test_parquet_float_ids_are_refused_naming_the_column(tmp_path, write_params):
    d = tmp_path / "p"
    d.mkdir()
    pq.write_table(pa.table({"user_id": [1.0], "item_id": [2], "timestamp": [1400000000], "rating": [5.0]}),
                   d / "inter.parquet")
    pq.write_table(pa.table({"item_id": [2], "title": ["A"]}), d / "items.parquet")
    src = _table_source(d, b"", b"", suffix="unused")
    src.update(interactions=str(d / "inter.parquet"), items=str(d / "items.parquet"))
    with pytest.raises(InputError, match=r"inter.parquet: column 'user_id' has type double; ids must be"):
        ingest(write_params([src]))


def test_bad_ratings_and_times_are_quarantined_with_the_text_of_the_file(tmp_path, write_params):
    inter = (b"user_id,item_id,timestamp,rating\n"
             b"u1,i1,1400000000,5\n"                      # 2 kept
             b"u1,i1,1400000001,NaN\n"                    # 3
             b"u1,i1,1400000002,five\n"                   # 4
             b"u1,i1,1400000003,-3\n"                     # 5 outside [1, 5]
             b"u1,i1,1400000004,1e400\n"                  # 6
             b"u1,i1,1400000005,\n"                       # 7 kept: no rating
             b"u1,i1,99999999999999999999,4\n"            # 8
             b"u1,i1,yesterday,4\n")                      # 9
    params = write_params([_table_source(tmp_path / "s", inter, b"item_id,title\ni1,One\n", rating_range=[1, 5])])
    ingest(params)
    rows, _, quarantine = _interim(params)
    assert rows["source_line"].tolist() == [2, 7] and pd.isna(rows["rating"].iloc[1])
    reasons = quarantine.set_index("source_line")["reason"].to_dict()
    assert reasons == {3: "rating is not a number in [1, 5]: 'NaN'", 4: "rating is not a number in [1, 5]: 'five'",
                       5: "rating is not a number in [1, 5]: '-3'", 6: "rating is not a number in [1, 5]: '1e400'",
                       8: "timestamp is too large to be a time: '99999999999999999999'",
                       9: "timestamp is not a number: 'yesterday'"}
    assert "'timestamp': '99999999999999999999'" in quarantine.set_index("source_line").loc[8, "record"]


def test_json_numbers_keep_their_text(tmp_path, write_params):
    d = tmp_path / "j"
    d.mkdir()
    reviews = [{"reviewerID": 13, "asin": "B1", "overall": 5, "unixReviewTime": 1400000000},
               {"reviewerID": "A7", "asin": "B1", "overall": 1e400 if False else 4.0, "unixReviewTime": 1400000001}]
    lines = [json.dumps(r) for r in reviews] + ['{"reviewerID": "A8", "asin": "B1", "overall": NaN, "unixReviewTime": 1}']
    (d / "reviews_X_5.json").write_text("\n".join(lines) + "\n")
    (d / "meta_X.json").write_text(json.dumps({"asin": "B1", "title": "One"}) + "\n")
    params = write_params([{"name": "x", "format": "amazon2018", "domain": "X",
                            "interactions": str(d / "reviews_X_5.json"), "items": str(d / "meta_X.json")}])
    ingest(params)
    rows, _, quarantine = _interim(params)
    assert rows["user_id"].tolist() == ["13", "A7"]
    assert quarantine["reason"].tolist() == ["rating is not a number: 'NaN'"]


@pytest.mark.parametrize("damage", ["truncated", "not gzip"])
def test_broken_gzip_is_one_line_naming_the_file(tmp_path, write_params, damage):
    d = tmp_path / "g"
    d.mkdir()
    data = gzip.compress(("".join(f"B{i % 3},U{i},5.0,{1400000000 + i}\n" for i in range(20000))).encode())
    (d / "X.csv.gz").write_bytes(data[: len(data) // 2] if damage == "truncated" else b"B1,U1,5.0,1400000000\n")
    (d / "meta_X.json").write_text(json.dumps({"asin": "B1", "title": "One"}) + "\n")
    params = write_params([{"name": "x", "format": "amazon2018", "domain": "X",
                            "interactions": str(d / "X.csv.gz"), "items": str(d / "meta_X.json")}])
    res = runner.invoke(app, ["ingest", "--params", str(params.base_dir / "params.yaml")])
    assert res.exit_code == 2, res.output
    assert "X.csv.gz" in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) <= 2  # one message (maybe wrapped)
    assert not DataLayout(params.data_root).interim.exists()  # nothing half-written


def test_config_rejects_a_domain_or_a_source_listed_twice(tmp_path, write_params):
    src = _table_source(tmp_path / "s", b"user_id,item_id,timestamp\n", b"item_id,title\n")
    with pytest.raises(ConfigError, match="domains lists 'Shop' more than once"):
        write_params([src], data={"domains": ["Shop", "Shop"]})
    with pytest.raises(ConfigError, match="sources: name lists 't' more than once"):
        write_params([src, src])
    path = tmp_path / "params.yaml"
    res = runner.invoke(app, ["ingest", "--params", str(path), "--set", "data.domains=[Shop, Shop]"])
    assert res.exit_code == 2 and "more than once" in res.output and "Traceback" not in res.output


def test_source_paths_can_be_overridden_by_index(tmp_path, write_params):
    src = _table_source(tmp_path / "s", b"user_id,item_id,timestamp\n", b"item_id,title\n")
    write_params([src])
    params = load_params(tmp_path / "params.yaml", ["data.sources[0].items=elsewhere.csv"])
    assert params.data.sources[0].items.name == "elsewhere.csv"
    with pytest.raises(ConfigError, match=r"index \[3\] is outside the list"):
        load_params(tmp_path / "params.yaml", ["data.sources[3].items=x"])


def test_prepare_on_an_empty_validated_table_names_it(tmp_path, write_params):
    inter = b"user_id,item_id,timestamp\nu1,nope,1400000000\n"  # every interaction has an unknown item
    params = write_params([_table_source(tmp_path / "s", inter, b"item_id,title\ni1,One\n")],
                          validation={"max_bad_fraction": 1.0})
    ingest(params)
    validate(params)
    with pytest.raises(PreparationError, match=r"validated/interactions.parquet: no interactions passed validation"):
        prepare(params)


def test_prepare_refuses_data_validated_from_an_earlier_ingest(tmp_path, write_params):
    inter = "user_id,item_id,timestamp\n" + "".join(f"u{u},i{i},{1400000000 + 10 * u + i}\n"
                                                    for u in range(8) for i in range(6))
    items = "item_id,title\n" + "".join(f"i{i},Item {i}\n" for i in range(6))
    params = write_params([_table_source(tmp_path / "s", inter.encode(), items.encode())],
                          prepare={"min_user_interactions": 1, "min_item_interactions": 1})
    ingest(params)
    validate(params)
    ingest(params)  # new raw data, not validated yet
    with pytest.raises(PreparationError, match="earlier ingest"):
        prepare(params)
    validate(params)
    assert prepare(params)["interactions_kept"] == 48


def test_unexpected_errors_print_one_line_and_a_log(tmp_path, write_params, monkeypatch):
    import llmrec_core.data.ingest as ingest_module

    write_params([_table_source(tmp_path / "s", b"user_id,item_id,timestamp\n", b"item_id,title\n")])
    monkeypatch.setenv("LLMREC_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(ingest_module, "ingest", lambda *a, **k: 1 / 0)
    res = runner.invoke(app, ["ingest", "--params", str(tmp_path / "params.yaml")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "internal error: ZeroDivisionError" in res.output
    logs = list((tmp_path / "logs").glob("llmrec-ingest-*.log"))
    assert len(logs) == 1 and "ZeroDivisionError" in logs[0].read_text() and "Traceback" in logs[0].read_text()


def test_a_read_only_data_root_is_a_clear_error_and_exit_2(tmp_path, write_params, monkeypatch):
    import errno

    import filelock

    write_params([_table_source(tmp_path / "s", b"user_id,item_id,timestamp\nu1,i1,1400000000\n",
                                b"item_id,title\ni1,One\n")])
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: fail the lock file as the OS does for anyone else
        def read_only(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)
        monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    try:
        res = runner.invoke(app, ["ingest", "--params", str(tmp_path / "params.yaml")])
    finally:
        (tmp_path / "data").chmod(0o755)
    assert res.exit_code == 2, res.output
    assert f"{tmp_path / 'data'}: the folder is not writable" in " ".join(res.output.split())


def test_item_ids_with_control_characters_are_quarantined_by_validation(tmp_path, write_params):
    inter = b"user_id,item_id,timestamp\nu1,i1,1400000000\nu1,i\x002,1400000001\n"
    items = b"item_id,title\ni1,One\ni\x002,Nul\ni\x1b3,Escape\n"
    params = write_params([_table_source(tmp_path / "s", inter, items)], validation={"max_bad_fraction": 1.0})
    ingest(params)
    validate(params)
    layout = DataLayout(params.data_root)
    assert pd.read_parquet(layout.validated / "items.parquet")["item_id"].tolist() == ["Shop:i1"]
    quarantine = pd.read_parquet(layout.validated / "quarantine.parquet")
    reasons = quarantine[quarantine["table"] == "items"].set_index("source_line")["reason"]
    assert sorted(reasons.index) == [3, 4] and reasons.str.contains("item_id holds a control character").all()


def test_prepare_removes_scratch_databases_that_killed_prepares_left(tmp_path, write_params):
    inter = "user_id,item_id,timestamp\n" + "".join(f"u{u},i{i},{1400000000 + 10 * u + i}\n"
                                                    for u in range(8) for i in range(6))
    items = "item_id,title\n" + "".join(f"i{i},Item {i}\n" for i in range(6))
    params = write_params([_table_source(tmp_path / "s", inter.encode(), items.encode())],
                          prepare={"min_user_interactions": 1, "min_item_interactions": 1})
    ingest(params)
    validate(params)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = params.data_root / f".prepare-engine-{dead.pid}"  # a prepare killed mid-run leaves this
    alive = params.data_root / f".prepare-engine-{os.getppid()}"  # a running process's: not ours to remove
    for folder in (stale, alive):
        (folder / "spill").mkdir(parents=True)
        (folder / "engine.duckdb").write_bytes(b"x" * 1000)
    prepare(params)
    assert not stale.exists() and alive.exists()
    assert not list(params.data_root.glob(f".prepare-engine-{os.getpid()}"))  # its own is gone too


def test_a_stage_swaps_in_whole_and_readers_see_the_old_outputs_meanwhile(tmp_path):
    folder = tmp_path / "stage"
    with stage_output(folder, "test") as out:
        (out / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with stage_output(folder, "test") as out:
            (out / "a.txt").write_text("two")
            assert (folder / "a.txt").read_text() == "one"  # a reader during the write sees the old outputs
            with pytest.raises(StageBusy, match="another `test` is writing it"):
                with stage_output(folder, "test"):
                    pass
            raise RuntimeError("crash before the swap")
    assert (folder / "a.txt").read_text() == "one" and sorted(p.name for p in tmp_path.iterdir()) == [
        ".stage.lock", "stage"]
    # a writer that died between the swap's two renames: the next writer restores and cleans up
    os.replace(folder, tmp_path / ".stage.old-dead")
    (tmp_path / ".stage.tmp-1-dead").mkdir()
    with stage_output(folder, "test") as out:
        assert (folder / "a.txt").read_text() == "one"
        (out / "a.txt").write_text("three")
    assert (folder / "a.txt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stage.lock", "stage"]


def _big_source(d, users: int, tag: str) -> dict:
    d.mkdir(parents=True)
    lines = "".join(f"{tag}{i % 500},{tag}u{u},5.0,{1400000000 + u * 100 + i}\n" for u in range(users) for i in range(8))
    (d / "X.csv").write_text(lines)
    (d / "meta_X.json").write_text("".join(json.dumps({"asin": f"{tag}{i}", "title": f"{tag} {i}"}) + "\n"
                                           for i in range(500)))
    return {"name": "x", "format": "amazon2018", "domain": "X", "interactions": str(d / "X.csv"),
            "items": str(d / "meta_X.json")}


def test_two_ingests_at_once_on_one_data_root(tmp_path):
    """One writer per stage: the second waits for nothing and refuses; the outputs are one run's, whole."""
    root = tmp_path / "data"
    configs = []
    for tag, users in (("a", 30000), ("b", 20000)):
        path = tmp_path / f"params-{tag}.yaml"
        path.write_text(yaml.safe_dump({"data": {"sources": [_big_source(tmp_path / tag, users, tag.upper())],
                                                 "root": str(root)},
                                        "validation": {"results_dir": str(tmp_path / "gx")}}))
        configs.append((tag, users, path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "llmrec_core", "ingest", "--params", str(p)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _, _, p in configs]
    outs = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    assert all(code in (0, 2) for code, _ in outs), outs
    assert any(code == 0 for code, _ in outs)
    for code, text in outs:
        if code == 2:
            assert "another `llmrec ingest` is writing" in text and "Traceback" not in text
    layout = DataLayout(root)
    report = json.loads((layout.interim / "ingest_report.json").read_text())
    interactions = pd.read_parquet(layout.interim / "interactions.parquet")
    items = pd.read_parquet(layout.interim / "items.parquet")
    counts = report["sources"][0]
    assert len(interactions) == counts["interactions"] and len(items) == counts["items"]
    winner = next(tag for tag, users, _ in configs if counts["interactions"] == users * 8)
    assert interactions["user_id"].str.startswith(f"{winner.upper()}u").all()  # no mix of the two runs
    assert pd.read_parquet(layout.interim / "quarantine.parquet").empty
    validate(load_params(tmp_path / f"params-{winner}.yaml"))
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".interim.")) == [".interim.lock"]


def test_stage_lock_refuses_a_second_writer_while_the_first_runs(tmp_path, write_params):
    src = _table_source(tmp_path / "s", b"user_id,item_id,timestamp\nu1,i1,1400000000\n", b"item_id,title\ni1,One\n")
    params = write_params([src])
    started = time.monotonic()
    with stage_output(DataLayout(params.data_root).interim, "llmrec ingest"):
        with pytest.raises(StageBusy, match=r"interim: another `llmrec ingest` is writing it"):
            ingest(params)
    assert time.monotonic() - started < 30
    ingest(params)  # free again
