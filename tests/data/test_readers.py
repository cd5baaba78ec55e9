"""Every reader maps its real format onto the contract (ids, domains, titles, epoch seconds)."""
import pandas as pd
import pytest

from llmrec_core.data.ingest import ingest
from llmrec_core.data.layout import DataLayout

from . import formats


def _run(write_params, source):
    params = write_params([source])
    counts = ingest(params)
    layout = DataLayout(params.data_root)
    items = pd.read_parquet(layout.interim / "items.parquet")
    inter = pd.read_parquet(layout.interim / "interactions.parquet")
    bad = pd.read_parquet(layout.quarantine("interim"))
    return counts[0], items, inter, bad


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("header", [True, False])
def test_amazon2018_ratings_csv_and_meta(tmp_path, write_params, gz, header):
    counts, items, inter, bad = _run(write_params, formats.amazon2018(tmp_path, gz=gz, header=header))
    assert bad.empty
    assert items["item_id"].tolist() == ["Office:B001", "Office:B002", "Office:B003"]
    # HTML unescaped, whitespace collapsed, Python-literal meta line parsed.
    assert items["title"].tolist() == ["Canon PIXMA Printer & Scanner", "Post-it Notes", "Swingline Stapler"]
    assert items.loc[2, "categories"] == "Office Products | Staplers"
    assert inter["user_id"].tolist() == ["U1", "U1", "U2"]
    assert inter["timestamp"].tolist() == [1400000000, 1400000100, 1400000200]
    assert inter["source_line"].tolist() == ([2, 3, 4] if header else [1, 2, 3])
    assert (inter["domain"] == "Office").all()


def test_amazon2018_reviews_json(tmp_path, write_params):
    counts, items, inter, bad = _run(write_params, formats.amazon2018(tmp_path, reviews=True))
    assert inter["item_id"].tolist() == ["Office:B001", "Office:B003", "Office:B002"]
    assert inter["rating"].tolist() == [5.0, 4.0, 3.0]


def test_amazon2023_parent_asin_and_milliseconds(tmp_path, write_params):
    counts, items, inter, bad = _run(write_params, formats.amazon2023(tmp_path))
    assert items["item_id"].tolist() == ["Electronics:P1", "Electronics:P2"]
    assert items.loc[0, "brand"] == "Logi"
    assert inter["timestamp"].tolist() == [1588615855, 1588615955]


def test_amazon2023_titles_written_as_objects_or_lists_are_text_or_quarantined(tmp_path, write_params):
    import gzip
    import json

    source = formats.amazon2023(tmp_path)
    meta = [{"parent_asin": "D1", "title": {"de": "Titel", "en": "Dict Title"}},
            {"parent_asin": "D2", "title": {"x": {"en": "nested"}, "fr": "Titre"}},
            {"parent_asin": "L1", "title": ["Part One", None, "Part Two"]},
            {"parent_asin": "X1", "title": {"n": None, "b": False}},
            {"parent_asin": "X2", "title": []},
            {"parent_asin": "X3", "title": True}]
    with gzip.open(source["items"], "at") as fh:
        fh.write("".join(json.dumps(m) + "\n" for m in meta))
    counts, items, inter, bad = _run(write_params, source)
    titles = dict(zip(items["item_id"], items["title"]))
    assert titles["Electronics:D1"] == "Dict Title" and titles["Electronics:D2"] == "Titre"
    assert titles["Electronics:L1"] == "Part One Part Two"
    assert not any("{" in t or "[" in t for t in titles.values())
    reasons = dict(zip(bad["source_line"], bad["reason"]))
    assert reasons == {6: "title is an object without text", 7: "title is a list without text",
                       8: "title is a bool, not text"}
    assert "Electronics:X1" not in titles and counts.items_quarantined == 3


def test_ml100k_latin1_and_first_genre(tmp_path, write_params):
    counts, items, inter, bad = _run(write_params, formats.ml100k(tmp_path))
    assert bad.empty
    assert items["domain"].tolist() == ["Animation", "Action", "Drama"]
    assert items.loc[2, "title"] == "Misérables, Les (1995)"
    assert inter["item_id"].tolist() == ["Animation:1", "Action:2", "Drama:3"]


def test_ml1m_double_colon(tmp_path, write_params):
    counts, items, inter, bad = _run(write_params, formats.ml1m(tmp_path))
    assert items["title"].tolist() == ["Toy Story (1995)", "Star Wars: Episode IV (1977)"]
    assert inter[["user_id", "item_id", "timestamp"]].values.tolist() == [
        ["1", "Animation:1", 978300760], ["1", "Action:2", 978302109], ["2", "Action:2", 978301968]]


def test_ml_latest_csv_with_quoted_titles(tmp_path, write_params):
    counts, items, inter, bad = _run(write_params, formats.ml_latest(tmp_path))
    assert items["title"].tolist() == ["Toy Story (1995)", "American President, The (1995)"]
    assert items["domain"].tolist() == ["Adventure", "Comedy"]
    assert inter["item_id"].tolist() == ["Adventure:1", "Comedy:2"]


def test_recbole_typed_headers(tmp_path, write_params):
    counts, items, inter, bad = _run(write_params, formats.recbole(tmp_path))
    assert items["item_id"].tolist() == ["Animation:1", "Action:2"]
    assert inter["timestamp"].tolist() == [881250949, 881250950]


@pytest.mark.parametrize("parquet", [False, True])
def test_generic_table_with_column_map(tmp_path, write_params, parquet):
    counts, items, inter, bad = _run(write_params, formats.table(tmp_path, parquet=parquet))
    assert items["item_id"].tolist() == ["Outdoor:k1", "Outdoor:k2"]
    assert inter["timestamp"].tolist() == [1600000000, 1600000500]
    assert inter["user_id"].tolist() == ["c1", "c1"]


def test_several_sources_combine_and_share_users(tmp_path, write_params):
    a = formats.amazon2018(tmp_path)
    (tmp_path / "b").mkdir()
    b = formats.amazon2018(tmp_path / "b", header=True) | {"name": "office2", "domain": "Office2"}
    params = write_params([a, b])
    counts = ingest(params)
    inter = pd.read_parquet(DataLayout(params.data_root).interim / "interactions.parquet")
    assert [c.interactions for c in counts] == [3, 3]
    assert set(inter["domain"]) == {"Office", "Office2"}
    assert inter.groupby("user_id")["domain"].nunique()["U1"] == 2
