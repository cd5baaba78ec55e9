"""What an error response may say: nothing of the request body, no filesystem path.

Pydantic's validation errors carry the offending `input` (the whole body, for a body of the wrong type): only
each error's type, location and message are kept, and a location's keys are cut short (an unknown field's
name is the client's text). Messages of 4xx responses lose the directories of any absolute path they name.
"""
from __future__ import annotations

import re

MAX_LOCATION_CHARS = 64
# an absolute path: a "/" not preceded by a word character or a dot, then non-blank characters
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/[^\s'\"(),;]*")


def _file_name(match: re.Match) -> str:
    name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
    return name or "/"


def public_detail(detail):
    """`detail` with every absolute path cut to its last component (strings, or lists and dicts of them)."""
    if isinstance(detail, str):
        return _ABSOLUTE_PATH.sub(_file_name, detail)
    if isinstance(detail, list):
        return [public_detail(d) for d in detail]
    if isinstance(detail, dict):
        return {k: public_detail(v) for k, v in detail.items()}
    return detail


def _short(part):
    if isinstance(part, str) and len(part) > MAX_LOCATION_CHARS:
        return part[:MAX_LOCATION_CHARS] + "..."
    return part


def public_validation_errors(errors) -> list[dict]:
    """Pydantic/FastAPI validation errors without the input they refused: type, location, message."""
    return [{"type": e.get("type"), "loc": [_short(p) for p in e.get("loc", ())],
             "msg": public_detail(str(e.get("msg", "")))} for e in errors]
