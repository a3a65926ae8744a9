"""The Python blocks of the project's Markdown pages, for the tests that run them as
written (README.md, docs/handlers.md, docs/testing.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PYTHON = re.compile(r"```python\n(.*?)```", re.S)


def python_blocks(page: str, *, after: str | None = None) -> list[str]:
    """Return the ```python blocks of `page` (a path from the repository's root), in
    order; with `after`, only those after that heading (`"## Testing a bot"`)."""
    text = (ROOT / page).read_text()
    if after is not None:
        text = text.split(after, 1)[1]
    return _PYTHON.findall(text)
