"""The data contract, in one place: the Arrow schemas of the tables the data stages write, the item-id rule,
and the great-expectations checks that items and interactions must pass (at validation, and for new items
arriving between trainings).

Every row keeps the file and line it came from until preparation, so a row rejected at any stage can be
reported as "file:line: reason".
"""
from __future__ import annotations

import re

import pyarrow as pa

STR = pa.string()
PROVENANCE = [("source_file", STR), ("source_line", pa.int64())]
ITEMS = pa.schema([("item_id", STR), ("domain", STR), ("title", STR), ("brand", STR), ("categories", STR),
                   ("description", STR), *PROVENANCE])
INTERACTIONS = pa.schema([("user_id", STR), ("item_id", STR), ("domain", STR), ("timestamp", pa.int64()),
                          ("rating", pa.float64()), *PROVENANCE])
QUARANTINE = pa.schema([("stage", STR), ("table", STR), *PROVENANCE, ("reason", STR), ("record", STR)])


# Ids name things in files, logs and URLs: a control character (a line break, NUL, ...) in one is refused, by
# validation and for new items (GX, below) and by the HTTP service's request models alike.
ID_CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"
_ID_CONTROL_RE = re.compile(ID_CONTROL_CHARACTERS)


def id_has_control_characters(value: str) -> bool:
    """Does this id break the id rule (hold a control character)?"""
    return _ID_CONTROL_RE.search(value) is not None


def make_item_id(domain, native_id):
    """Item ids are unique across domains: `<domain>:<native id>` (vectorised over pandas Series)."""
    return domain + ":" + native_id


def item_expectations(max_title_chars: int, domains: list[str] | None = None) -> list:
    """An item has a unique id without control characters, a domain (one of `domains` when given) and a title of 1
    to `max_title_chars` characters."""
    import great_expectations as gx  # a slow import: only where items are checked

    expect = gx.expectations
    checks = [
        expect.ExpectColumnValuesToNotBeNull(column="item_id"),
        expect.ExpectColumnValuesToBeUnique(column="item_id"),
        expect.ExpectColumnValuesToNotMatchRegex(column="item_id", regex=ID_CONTROL_CHARACTERS),
        expect.ExpectColumnValuesToNotBeNull(column="domain"),
        expect.ExpectColumnValuesToNotBeNull(column="title"),
        expect.ExpectColumnValueLengthsToBeBetween(column="title", min_value=1, max_value=max_title_chars),
    ]
    if domains:
        checks.append(expect.ExpectColumnValuesToBeInSet(column="domain", value_set=list(domains)))
    return checks


KNOWN_ITEM = "known_item"  # derived at validation: is the row's item among the validated items?


def with_known_item(interactions, item_ids):
    """The interactions plus a KNOWN_ITEM column: is the row's item in `item_ids`, a pandas Index of unique ids
    (its hash table is built once and reused for every chunk, where `isin` rebuilds it for each). GX checks that column rather than `item_id` against a value set, because GX's set check
    costs seconds per run for every 100k ids in the set, and validation runs once per chunk. A missing item_id
    counts as known here: the not-null check reports it."""
    if not item_ids.is_unique:
        item_ids = item_ids.drop_duplicates()
    known = (item_ids.get_indexer(interactions["item_id"]) >= 0) | interactions["item_id"].isna().to_numpy()
    return interactions.assign(**{KNOWN_ITEM: known})


def interaction_expectations(min_timestamp: int, max_timestamp: int, check_items: bool = False,
                             domains: list[str] | None = None) -> list:
    """An interaction has a user, an item (a known one when `check_items`: see with_known_item), a domain among
    `domains` when given, and a timestamp in [min_timestamp, max_timestamp] seconds."""
    import great_expectations as gx

    expect = gx.expectations
    checks = [
        expect.ExpectColumnValuesToNotBeNull(column="user_id"),
        expect.ExpectColumnValuesToNotBeNull(column="item_id"),
        expect.ExpectColumnValuesToNotBeNull(column="timestamp"),
        expect.ExpectColumnValuesToBeBetween(column="timestamp", min_value=min_timestamp, max_value=max_timestamp),
    ]
    if check_items:
        checks.append(expect.ExpectColumnValuesToBeInSet(column=KNOWN_ITEM, value_set=[True]))
    if domains:
        checks.append(expect.ExpectColumnValuesToBeInSet(column="domain", value_set=list(domains)))
    return checks
