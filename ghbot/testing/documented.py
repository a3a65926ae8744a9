"""The operations GitHub's REST description has, for the fake's answer to a request no
route of it takes: 501 naming the operation when GitHub has it (the fake does not
implement it), 404 as GitHub's when it does not.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

__all__ = ["SPANNING", "documented"]

#: The path parameters of GitHub's operations that may hold slashes: a file's path, a
#: git ref, a branch, a tag, a folder and `base...head`.
SPANNING = re.compile(r"\{(path|ref|branch|tag|dir|basehead)\}")


@functools.cache
def _operations() -> dict[str, list[tuple[re.Pattern[str], str]]]:
    """By method: each described operation's path pattern and template. Imports every
    generated namespace once (about a second), on the first request no route takes."""
    from ghbot.rest import namespaces
    from ghbot.rest.operation import Op

    found: dict[str, list[tuple[re.Pattern[str], str]]] = {}
    for info in pkgutil.iter_modules(namespaces.__path__):
        module = importlib.import_module(f"{namespaces.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Op):
                literal = re.escape(value.path).replace(r"\{", "{").replace(r"\}", "}")
                regex = SPANNING.sub(".+", literal)
                regex = re.sub(r"\{\w+\}", "[^/]+", regex)
                pattern = re.compile(f"^{regex}/?$")
                found.setdefault(value.method, []).append((pattern, value.path))
    for operations in found.values():
        # The most literal first: `/issues/comments` before `/issues/{issue_number}`.
        operations.sort(key=lambda op: -sum("{" not in part for part in op[1].split("/")))
    return found


def documented(method: str, path: str) -> str | None:
    """Return the template of GitHub's operation `method path` (`/repos/{owner}/...`),
    or None when GitHub's REST description has none."""
    for pattern, template in _operations().get("GET" if method == "HEAD" else method, ()):
        if pattern.match(path):
            return template
    return None
