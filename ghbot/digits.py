"""Whole numbers as headers, URLs, IDs and ports write them: ASCII decimal digits.

`str.isdigit` is true of "²" and `int("²")` raises; `int` also takes "٣" (an
Arabic-Indic three), " 3", "+3" and "3_000", none of which such a number is written
with. Every place ghbot reads one goes through `whole_number`.
"""

from __future__ import annotations

__all__ = ["whole_number"]


def whole_number(text: str) -> int | None:
    """Return `text` as an int when it is one or more ASCII decimal digits, else None."""
    return int(text) if text.isascii() and text.isdecimal() else None
