"""Property-based hostile input (hypothesis): every reader, fed a mix of valid and broken records (bytes,
field counts, values, byte-order marks, compression), accounts for every line and keeps ids as written.

Invariant per file: each non-blank data line is either kept (with exactly the ids it holds) or quarantined
with its line number, never both, never neither; a valid record is kept and a broken one is not; nothing
but a one-line InputError naming the file ever escapes. The default suite draws a few examples per reader;
`make test-slow` draws many more.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec_core.config import SourceConfig
from llmrec_core.data.sources import InputError, read_interactions

ID = st.text(alphabet="0123456789abcXYZ_-", min_size=1, max_size=8)
GOOD_RATING = st.sampled_from(["1", "5", "4.5", "3.0"])
BAD_RATING = st.sampled_from(["five", "nan", "NaN", "1e400", "-3", "inf"])
GOOD_TIME = st.integers(1_000_000_000, 1_700_000_000).map(str)
BAD_TIME = st.sampled_from(["yesterday", "99999999999999999999", "1e400", "nan"])


@st.composite
def records(draw):
    """(kind, user, item, rating, timestamp): kind is valid, bad_value, wrong_fields, bad_bytes or blank."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "bad_value", "wrong_fields", "bad_bytes", "blank"]))
    user, item = draw(ID), draw(ID)
    rating, time = draw(GOOD_RATING), draw(GOOD_TIME)
    if kind == "bad_value":
        if draw(st.booleans()):
            rating = draw(BAD_RATING)
        else:
            time = draw(BAD_TIME)
    return kind, user, item, rating, time


FILES = st.lists(records(), min_size=1, max_size=40)


def _line(kind, fields: list[str], sep: str) -> bytes:
    if kind == "blank":
        return b""
    if kind == "wrong_fields":
        return sep.join(fields + ["extra"]).encode()
    line = sep.join(fields).encode()
    return line.replace(fields[0].encode(), fields[0].encode() + b"\xff", 1) if kind == "bad_bytes" else line


def _write(path: Path, lines: list[bytes], bom: bool, gz: bool) -> Path:
    data = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n"
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _check(src: SourceConfig, path: Path, recs, first_line: int, lines_of=None) -> None:
    if any("\n" in r[1] for r in recs):  # a multi-line quoted field: the file must be refused, naming it
        with pytest.raises(InputError, match="spans several lines"):
            for _ in read_interactions(src, path, chunk_rows=1000):
                pass
        return
    """The invariant: every non-blank record's line is kept xor quarantined; valid ones kept with their ids."""
    kept, bad = [], []
    try:
        for batch in read_interactions(src, path, chunk_rows=1000):
            kept.append(batch.rows)
            bad.append(batch.bad)
    except InputError as e:  # the whole file refused: allowed, if it says which file
        assert str(path) in str(e)
        return
    kept = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=["source_line"])
    bad = pd.concat(bad, ignore_index=True) if bad else pd.DataFrame(columns=["source_line"])
    kept_lines, bad_lines = kept["source_line"].tolist(), bad["source_line"].tolist()
    assert not set(kept_lines) & set(bad_lines)
    assert len(kept_lines) == len(set(kept_lines))
    expected, blank = {}, set()
    for i, (kind, user, item, rating, time) in enumerate(recs):
        line = first_line + (lines_of[i] if lines_of else i)
        if kind == "blank":
            blank.add(line)
        else:
            expected[line] = (kind, user, item)
    # nothing lost, nothing invented; a blank line is no record (a reader may skip it or report it)
    assert set(expected) <= set(kept_lines) | set(bad_lines) <= set(expected) | blank
    assert not blank & set(kept_lines)
    by_line = kept.set_index("source_line")
    for line, (kind, user, item) in expected.items():
        if kind == "valid":
            assert line in by_line.index, (line, kind)
            assert by_line.loc[line, "user_id"] == user and by_line.loc[line, "native_item"] == item
        else:
            assert line not in by_line.index, (line, kind)


def _source(fmt: str, path: Path, **extra) -> SourceConfig:
    return SourceConfig(name="s", format=fmt, domain="D", interactions=path, items=path, rating_range=(1, 5), **extra)


TABLE_COLUMNS = {"user_id": "user", "item_id": "item", "timestamp": "time", "title": "title", "rating": "stars"}


QUOTED = st.sampled_from(["comma", "newline", "none", "none"])


def _quote(recs, how: str):
    """CSV quoting: one record's user id becomes a quoted field holding a comma (valid, kept with the comma)
    or a line break (the file is refused, since its line numbers could not stay exact)."""
    recs = list(recs)
    valid = [i for i, r in enumerate(recs) if r[0] == "valid"]
    if how == "none" or not valid:
        return recs, None
    kind, user, item, rating, time = recs[valid[0]]
    recs[valid[0]] = (kind, f"{user},{'z' if how == 'comma' else chr(10) + 'z'}", item, rating, time)
    return recs, valid[0]


def _csv_field(value: str) -> str:
    return f'"{value}"' if ("," in value or "\n" in value) else value


def table_csv(tmp_path, recs, bom, gz, quoted="none"):
    recs, _ = _quote(recs, quoted)
    lines = [b"user,item,stars,time"] + [_line(k, [_csv_field(u), i, r, t], ",") for k, u, i, r, t in recs]
    path = _write(tmp_path / "inter.csv", lines, bom, gz)
    _check(_source("table", path, columns=TABLE_COLUMNS), path, recs, first_line=2)


def amazon_ratings_csv(tmp_path, recs, bom, gz, quoted="none"):
    recs, _ = _quote(recs, quoted)
    lines = [_line(k, [i, _csv_field(u), r, t], ",") for k, u, i, r, t in recs]
    path = _write(tmp_path / "Books.csv", lines, bom, gz)
    # the reader's record is (item, user, ...): a record's ids are checked as user=user, item=item
    _check(_source("amazon2018", path), path, recs, first_line=1)


def amazon_reviews_json(tmp_path, recs, bom, gz):
    lines = []
    for kind, user, item, rating, time in recs:
        obj = {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": time}
        text = json.dumps(obj)
        if kind == "blank":
            lines.append(b"")
        elif kind == "wrong_fields":
            lines.append(text[:-2].encode())  # a cut-off object
        elif kind == "bad_bytes":
            lines.append(text.encode().replace(b'"reviewerID"', b'"reviewerID\xff"'))
        else:
            lines.append(text.encode())
    path = _write(tmp_path / "reviews_Books_5.json", lines, False, gz)  # JSON lines carry no byte-order mark
    _check(_source("amazon2018", path), path, recs, first_line=1)


def recbole_inter(tmp_path, recs, bom, gz):
    lines = [b"user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [_line(k, [u, i, r, t], "\t") for k, u, i, r, t in recs]
    path = _write(tmp_path / "x.inter", lines, bom, False)
    _check(_source("recbole", path), path, recs, first_line=2)


def movielens_udata(tmp_path, recs, bom, gz):
    lines = [_line(k, [u, i, r, t], "\t") for k, u, i, r, t in recs]
    path = _write(tmp_path / "u.data", lines, False, False)
    _check(_source("movielens", path), path, recs, first_line=1)


READERS = [table_csv, amazon_ratings_csv, amazon_reviews_json, recbole_inter, movielens_udata]


def _run(reader, tmp_path_factory, recs, bom, gz, quoted):
    extra = {"quoted": quoted} if reader in (table_csv, amazon_ratings_csv) else {}
    reader(tmp_path_factory.mktemp(reader.__name__), recs, bom, gz, **extra)


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=FILES, bom=st.booleans(), gz=st.booleans(), quoted=QUOTED)
def test_every_line_is_kept_or_quarantined(reader, tmp_path_factory, recs, bom, gz, quoted):
    _run(reader, tmp_path_factory, recs, bom, gz, quoted)


@pytest.mark.slow
@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=FILES, bom=st.booleans(), gz=st.booleans(), quoted=QUOTED)
def test_every_line_is_kept_or_quarantined_many(reader, tmp_path_factory, recs, bom, gz, quoted):
    _run(reader, tmp_path_factory, recs, bom, gz, quoted)


INT_TYPES = st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint64()])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=INT_TYPES, users=st.lists(st.one_of(st.none(), st.integers(0, 120)), min_size=1, max_size=30))
def test_parquet_integer_ids_of_any_width_are_their_digits(tmp_path_factory, kind, users):
    path = tmp_path_factory.mktemp("pq") / "inter.parquet"
    n = len(users)
    pq.write_table(pa.table({"user": pa.array(users, type=kind), "item": pa.array(range(n), type=pa.int64()),
                             "time": pa.array([1_400_000_000 + i for i in range(n)]),
                             "stars": pa.array([3.0] * n)}), path)
    src = _source("table", path, columns=TABLE_COLUMNS)
    rows = pd.concat([b.rows for b in read_interactions(src, path, chunk_rows=1000)], ignore_index=True)
    assert len(rows) == n
    assert [None if pd.isna(u) else u for u in rows["user_id"]] == [None if u is None else str(u) for u in users]
    assert rows["native_item"].tolist() == [str(i) for i in range(n)]
