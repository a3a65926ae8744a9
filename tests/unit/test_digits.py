"""`whole_number`: the one reading of a whole number in a header, URL, ID or port."""

from __future__ import annotations

import pytest

from ghbot.digits import whole_number


@pytest.mark.parametrize(
    ("text", "number"),
    [("0", 0), ("42", 42), ("007", 7), ("12345678901234567890", 12345678901234567890)],
)
def test_ascii_decimal_digits_are_a_whole_number(text: str, number: int) -> None:
    assert whole_number(text) == number


@pytest.mark.parametrize("text", ["", "²", "٣", " 3", "3 ", "+3", "-3", "3_000", "3.0", "0x1f"])
def test_anything_else_is_none_where_int_would_raise_or_read_it(text: str) -> None:
    assert whole_number(text) is None
