"""The items/interactions data contract (DESIGN §2) and the provenance columns that travel with it.

Every row keeps the file and line it came from until preparation, so a row rejected at any
stage can be reported as "file:line: reason".
"""
ITEM_COLUMNS = ["item_id", "domain", "title"]
ITEM_OPTIONAL = ["brand", "categories", "description", "first_seen"]
INTERACTION_COLUMNS = ["user_id", "item_id", "domain", "timestamp", "rating"]
PROVENANCE = ["source_file", "source_line"]
QUARANTINE_COLUMNS = ["stage", "table", "source_file", "source_line", "reason", "record"]


def make_item_id(domain, native_id):
    """Item ids are unique across domains: `<domain>:<native id>` (vectorised over pandas Series)."""
    return domain + ":" + native_id
