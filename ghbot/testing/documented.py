"""The operations GitHub's REST description has, for the fake's answer to a request no
route of it takes: 501 naming the operation when GitHub has it (the fake does not
implement it), 404 as GitHub's when it does not; and their query parameters, for its
answer to one a route of it does not honour: 501 too.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re

from ghbot.testing.router import Ctx, Reply, Router, error

__all__ = ["described", "documented", "not_implemented", "stub_template"]

#: The path parameters of GitHub's operations that may hold slashes: a file's path, a
#: git ref, a branch, a tag, a folder and `base...head`.
_SPANNING = re.compile(r"\{(path|ref|branch|tag|dir|basehead)\}")


def stub_template(template: str) -> str:
    """GitHub's `template` as `Router.add` (and `FakeGitHub.stub`) reads it: a
    parameter that may hold slashes as `{path*}`."""
    return _SPANNING.sub(r"{\1*}", template)


def documented(method: str, path: str) -> str | None:
    """Return the template of GitHub's operation `method path` (`/repos/{owner}/...`),
    the most literal one that matches, or None when GitHub's REST description has none."""
    found = described(method, path)
    return None if found is None else found[0]


def described(method: str, path: str) -> tuple[str, frozenset[str]] | None:
    """Return the template of GitHub's operation `method path` (as `documented`) and its
    query parameters, or None when GitHub's REST description has no such operation."""
    found = _operations().match(method, path)
    if found is None:
        return None
    route = found[0]
    return route.template.replace("*}", "}"), frozenset(route.query or ())


def not_implemented(method: str, template: str, *, part: str = "", jwt: bool = False) -> str:
    """The fake's 501 message for GitHub's operation `method template` (or `part` of
    it: a query parameter, a search qualifier), with the `fake.stub` call that answers
    it (`jwt`: for the app's JWT)."""
    what = f"{part} of {method} {template}" if part else f"{method} {template}"
    auth = ", auth='jwt'" if jwt else ""
    return (
        f"FakeGitHub does not implement {what}: answer it in the test with "
        f"fake.stub({method!r}, {stub_template(template)!r}, data{auth})"
    )


@functools.cache
def _operations() -> Router:
    """Every described operation, routed most literal first (`/issues/comments` before
    `/issues/{issue_number}`). Imports every generated namespace once (about 0.3 s here), on
    the first request no route of the fake takes."""
    from ghbot.rest import namespaces
    from ghbot.rest.operation import Op

    found = []
    for info in pkgutil.iter_modules(namespaces.__path__):
        module = importlib.import_module(f"{namespaces.__name__}.{info.name}")
        found += [value for value in vars(module).values() if isinstance(value, Op)]
    found.sort(key=lambda op: -sum("{" not in part for part in op.path.split("/")))
    router = Router()
    for op in found:
        query = {op.wire.get(name, name): None for name in op.in_query}
        router.add(op.method, stub_template(op.path), _described, auth="any", query=query)
    return router


def _described(_ctx: Ctx) -> Reply:
    """Never called: the fake matches these routes only to name an operation."""
    return error(501, "not implemented by the fake")
