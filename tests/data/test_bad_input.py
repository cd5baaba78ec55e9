"""Bad input gets a clear message naming file, line and reason, and nothing is silently lost."""
import gzip
import json
import re

import pandas as pd
import pytest

from llmrec_core.data.ingest import ingest
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.prepare import PreparationError, prepare
from llmrec_core.data.sources import InputError
from llmrec_core.data.validate import ValidationFailed, validate

GOOD_META = [{"asin": f"I{i}", "title": f"Item number {i}"} for i in range(8)]


def _source(tmp_path, meta_lines: list[str], rating_lines: list[bytes], domain="Office", name="s"):
    d = tmp_path / name
    d.mkdir()
    (d / "meta.json").write_text("\n".join(meta_lines) + "\n")
    (d / "ratings.csv").write_bytes(b"\n".join(rating_lines) + b"\n")
    return {"name": name, "format": "amazon2018", "domain": domain,
            "interactions": str(d / "ratings.csv"), "items": str(d / "meta.json")}


def _good_ratings(users=6, per_user=6):
    return [f"I{(u + k) % 8},u{u},5.0,{1400000000 + 1000 * u + k}".encode() for u in range(users) for k in range(per_user)]


def _pipeline(write_params, sources, max_bad=0.5, **prepare):
    params = write_params(sources, validation={"max_bad_fraction": max_bad},
                          prepare={"min_user_interactions": 3, "min_item_interactions": 1, **prepare})
    ingest(params)
    validate(params)
    layout = DataLayout(params.data_root)
    quarantine = pd.concat([pd.read_parquet(layout.quarantine("interim")),
                            pd.read_parquet(layout.quarantine("validated"))], ignore_index=True)
    return params, layout, quarantine


def _interactions_conserved(layout, quarantine, lines_in):
    out = pd.read_parquet(layout.validated / "interactions.parquet")
    assert lines_in == len(out) + (quarantine["table"] == "interactions").sum()
    return out


def test_malformed_json_line_is_quarantined_with_line(tmp_path, write_params):
    meta = [json.dumps(m) for m in GOOD_META]
    meta.insert(3, '{"asin": "I99", "title": "broken')
    params, layout, q = _pipeline(write_params, [_source(tmp_path, meta, _good_ratings())])
    row = q[q["table"] == "items"].iloc[0]
    assert row["source_file"].endswith("meta.json") and row["source_line"] == 4
    assert "malformed JSON" in row["reason"]
    items = pd.read_parquet(layout.validated / "items.parquet")
    assert len(meta) == len(items) + (q["table"] == "items").sum()


def test_missing_and_empty_titles(tmp_path, write_params):
    meta = [json.dumps(m) for m in GOOD_META] + [json.dumps({"asin": "I8"}), json.dumps({"asin": "I9", "title": " &nbsp; "})]
    params, layout, q = _pipeline(write_params, [_source(tmp_path, meta, _good_ratings())])
    bad = q[q["table"] == "items"].set_index("source_line")
    assert "title is missing" in bad.loc[9, "reason"] or "title length" in bad.loc[9, "reason"]
    assert "title length" in bad.loc[10, "reason"]
    # GX Data Docs of the run: an index, and the items validation page shows the failed expectation
    docs = next((tmp_path / "gx").glob("*/data_docs"))
    assert (docs / "index.html").is_file()
    page = next((docs / "validations" / "items").rglob("*.html")).read_text()
    assert "Unsuccessful Expectations" in page and "characters long" in page and "2 unexpected values found" in page


def _with_bad_ratings(tmp_path, write_params, bad: list[bytes]):
    """Run the data stages on the good sample plus `bad` rating lines (appended last); check nothing is lost.
    Returns the interaction quarantine reasons by source line and the number of rating lines."""
    ratings = _good_ratings() + bad
    params, layout, q = _pipeline(write_params, [_source(tmp_path, [json.dumps(m) for m in GOOD_META], ratings)])
    _interactions_conserved(layout, q, len(ratings))
    return q[q["table"] == "interactions"].set_index("source_line")["reason"], len(ratings)


def test_unknown_item_and_items_of_quarantined_rows(tmp_path, write_params):
    reasons, n = _with_bad_ratings(tmp_path, write_params, [b"NOPE,u1,5.0,1400000999"])
    assert reasons.iloc[0] == "unknown item (not in items)" and reasons.index[0] == n


def test_string_and_millisecond_timestamps(tmp_path, write_params):
    reasons, n = _with_bad_ratings(tmp_path, write_params, [b"I1,u1,5.0,yesterday", b"I2,u1,5.0,1400000999000"])
    assert reasons[n - 1] == "timestamp is not a number: 'yesterday'"
    assert reasons[n].startswith("timestamp outside")  # milliseconds in a seconds column


def test_wrong_field_count_and_non_utf8(tmp_path, write_params):
    reasons, n = _with_bad_ratings(tmp_path, write_params, [b"I1,u1", b"I2,u\xff\xfe,5.0,1400000500"])
    assert reasons[n - 1] == "expected 4 fields, found 2"
    assert reasons[n] == "invalid UTF-8 bytes"


def test_non_utf8_json_line(tmp_path, write_params):
    src = _source(tmp_path, [json.dumps(m) for m in GOOD_META], _good_ratings())
    with open(src["items"], "ab") as fh:
        fh.write(b'{"asin": "I9", "title": "caf\xe9"}\n')
    params, layout, q = _pipeline(write_params, [src])
    assert q[q["table"] == "items"]["reason"].tolist() == ["invalid utf-8 byte at offset 28"]


def test_duplicate_events_are_dropped_with_a_reason(tmp_path, write_params):
    ratings = _good_ratings()
    ratings.append(ratings[0])
    params, layout, q = _pipeline(write_params, [_source(tmp_path, [json.dumps(m) for m in GOOD_META], ratings)])
    manifest = prepare(params)
    dropped = pd.read_parquet(layout.prepared / "dropped.parquet")
    assert manifest["dropped"]["duplicate event"] == 1
    assert dropped.loc[dropped["reason"] == "duplicate event", "source_line"].tolist() == [len(ratings)]
    assert manifest["interactions_in"] == manifest["interactions_kept"] + len(dropped)


def test_empty_file_is_a_clear_error(tmp_path, write_params):
    src = _source(tmp_path, [json.dumps(m) for m in GOOD_META], [])
    (tmp_path / "s" / "ratings.csv").write_bytes(b"")
    params = write_params([src])
    with pytest.raises(InputError, match=r"ratings\.csv: interactions file is empty"):
        ingest(params)


def test_empty_gzip_file_is_a_clear_error(tmp_path, write_params):
    src = _source(tmp_path, [json.dumps(m) for m in GOOD_META], _good_ratings())
    with gzip.open(tmp_path / "s" / "meta.json.gz", "wb"):
        pass
    src["items"] = str(tmp_path / "s" / "meta.json.gz")
    with pytest.raises(InputError, match=r"meta\.json\.gz: file is empty"):
        ingest(write_params([src]))


def test_missing_input_path(tmp_path, write_params):
    src = _source(tmp_path, [json.dumps(m) for m in GOOD_META], _good_ratings())
    src["interactions"] = str(tmp_path / "nowhere.csv")
    with pytest.raises(InputError, match=r"nowhere\.csv: interactions file not found"):
        ingest(write_params([src]))


def test_domain_with_no_rows_after_filtering(tmp_path, write_params):
    big = _source(tmp_path, [json.dumps(m) for m in GOOD_META], _good_ratings())
    tiny = _source(tmp_path, [json.dumps(m) for m in GOOD_META], [b"I1,u1,5.0,1400000000"], domain="Tiny", name="t")
    params, layout, q = _pipeline(write_params, [big, tiny], kcore_scope="per_domain")
    with pytest.raises(PreparationError, match=r"\['Tiny'\] have no interactions left after filtering"):
        prepare(params)


def test_too_many_bad_rows_fail_the_run_but_keep_the_quarantine(tmp_path, write_params):
    ratings = _good_ratings(users=2, per_user=3) + [b"NOPE,u1,5.0,1400000999"] * 3
    src = _source(tmp_path, [json.dumps(m) for m in GOOD_META], ratings)
    params = write_params([src], validation={"max_bad_fraction": 0.1})
    ingest(params)
    with pytest.raises(ValidationFailed, match=r"interactions: 3 of 9 records are bad") as failed:
        validate(params)
    # the quarantine outlives the failed gate, beside the GX results the message names
    path = re.search(r"see (\S+quarantine\.parquet)", str(failed.value)).group(1)
    q = pd.read_parquet(path)
    assert len(q) == 3
    # and nothing is left that prepare would accept (the gate cannot be walked around)
    assert not DataLayout(params.data_root).validated.exists()
    with pytest.raises(PreparationError, match="no validated data"):
        prepare(params)


def test_validation_in_chunks_keeps_and_quarantines_the_same_rows(tmp_path, write_params):
    ratings = _good_ratings(users=100, per_user=25)  # 2500 rows: three chunks of 1000
    for row in (10, 999, 1000, 1001, 2499):  # unknown items and bad timestamps on and beside chunk edges
        ratings[row] = b"NOPE,u1,5.0,1400000999" if row % 2 else b"I1,u1,5.0,99"
    source = [_source(tmp_path, [json.dumps(m) for m in GOOD_META], ratings)]
    outputs = {}
    for chunk in (1000, 100_000):
        params = write_params(source, data={"chunk_rows": chunk},
                              validation={"max_bad_fraction": 0.5, "max_timestamp": 1_500_000_000})
        ingest(params)
        validate(params)
        layout = DataLayout(params.data_root)
        outputs[chunk] = [pd.read_parquet(layout.validated / f"{t}.parquet") for t in ("interactions", "quarantine")]
        results = sorted((tmp_path / "gx").glob("*/interactions.json"))[-1]
        assert len(json.loads(results.read_text())["chunks"]) == -(-len(ratings) // chunk)
        (tmp_path / "gx").rename(tmp_path / f"gx-{chunk}")
    for small, whole in zip(outputs[1000], outputs[100_000]):
        pd.testing.assert_frame_equal(small, whole)
    quarantined = outputs[1000][1]
    assert sorted(quarantined["source_line"]) == [11, 1000, 1001, 1002, 2500]
    assert len(outputs[1000][0]) == len(ratings) - 5
