"""Column values in and out of DuckDB: input limits and checks, UTC time and JSON, shared by
the store's modules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from errors import InputError

# Stored text is never truncated: anything longer than its limit is refused with InputError.
MAX_TEXT_CHARS = 200_000
"""Longest question, answer, correction, chat message or passage text stored (characters)."""
MAX_COMMENT_CHARS = 5_000
"""Longest feedback comment (characters)."""
MAX_ID_CHARS = 256
"""Longest user id, conversation id, turn id, dataset id or actor name (characters)."""
MAX_TITLE_CHARS = 500
"""Longest conversation title (characters)."""
MAX_NOTE_CHARS = 10_000
"""Longest error text, retrieval note or event/transition reason (characters)."""
MAX_MESSAGES = 1_000
"""Most chat messages or passages stored with one turn."""


def check_text(
    name: str, value: object, limit: int, *, optional: bool = False, allow_empty: bool = True
) -> str | None:
    """Return `value` if it is a storable string within `limit` characters, else raise InputError.

    Refuses non-strings (bytes included: decode them first), lone surrogates (text that is not
    valid UTF-8) and text over the limit, naming the field and the limit.
    """
    if value is None:
        if optional:
            return None
        raise InputError(f"{name} is missing: pass a string")
    if not isinstance(value, str):
        raise InputError(
            f"{name} must be a string, not {type(value).__name__} (decode bytes as UTF-8 first)"
        )
    if len(value) > limit:
        raise InputError(
            f"{name} is {len(value):,} characters; the limit is {limit:,}. "
            "Shorten it (nothing is truncated silently)"
        )
    if not allow_empty and not value.strip():
        raise InputError(f"{name} is empty: pass a non-blank string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{name} is not valid UTF-8 text (character {exc.start} is a lone "
            "surrogate): decode the input with errors='replace' or fix its "
            "encoding"
        ) from None
    return value


def check_id(name: str, value: object) -> str:
    """Return a non-empty identifier of at most MAX_ID_CHARS characters, else raise InputError."""
    text = check_text(name, value, MAX_ID_CHARS, allow_empty=False)
    assert text is not None
    return text


def check_int(
    name: str, value: object, *, minimum: int | None = 0, optional: bool = False
) -> int | None:
    """Return an int (not a bool) at least `minimum`, else raise InputError."""
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} = {value}: must be at least {minimum}")
    return value


def check_number(name: str, value: object, *, optional: bool = False) -> float | None:
    """Return a finite non-negative float, else raise InputError."""
    if value is None and optional:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not value >= 0
        or value == float("inf")
    ):
        raise InputError(f"{name} must be a finite number >= 0, not {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices`, else raise InputError listing them."""
    if value not in choices:
        raise InputError(f"{name} = {value!r}: must be one of {', '.join(map(repr, choices))}")
    return str(value)


def to_json(name: str, value: Any) -> str:
    """Serialise a JSON-able value, raising InputError (not TypeError) when it is not."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} cannot be stored as JSON: {exc}") from None


def from_json(text: str | None, default: Any = None) -> Any:
    """Parse a stored JSON column (None stays `default`)."""
    return default if text is None else json.loads(text)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_db(moment: datetime | None) -> datetime | None:
    """A datetime as stored: naive UTC (naive inputs are taken as UTC already)."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise InputError(f"expected a datetime, not {moment!r}")
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def from_db(moment: datetime | None) -> datetime | None:
    """A stored naive-UTC timestamp as a timezone-aware UTC datetime."""
    return None if moment is None else moment.replace(tzinfo=UTC)


def aware(moment: datetime) -> datetime:
    """`from_db` for NOT NULL columns (keeps the type checker certain it is not None)."""
    return moment.replace(tzinfo=UTC)
