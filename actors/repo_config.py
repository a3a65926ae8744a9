"""A bot's configuration file in the repository it acts on (Probot's `context.config`).

`read_config(github, owner, repo, "bot.yml", schema)` reads `.github/bot.yml` from the
repository's default branch, else from the owner's `.github` repository (an
organization's defaults for all its repositories), parses it as YAML, follows one
`_extends:` (`repo`, `owner/repo`, either with `:path`) whose file it deep-merges under
its own keys, and decodes the result into `schema` (a `msgspec.Struct`, or any type
msgspec converts to). Neither file there: None. Requests go through the
installation's client, whose ETag cache makes a re-read of an unchanged file a 304
that costs no rate limit.

An unusable file raises `ghbot.errors.RepositoryConfigError`: not YAML, not a mapping,
or not of `schema`'s shape (msgspec's message says where).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
import yaml

from ghbot.client.github_client import GitHub
from ghbot.errors import NotFound, RepositoryConfigError, UsageError

__all__ = ["read_config"]

T = TypeVar("T")

#: `.github` is the owner's repository of defaults (GitHub's own convention).
DEFAULTS_REPOSITORY = ".github"


async def read_config(
    github: GitHub, owner: str, repo: str, path: str, schema: type[T]
) -> T | None:
    """Return the repository's `.github/<path>` decoded into `schema`, or None if absent."""
    file = _safe_path(f".github/{path.lstrip('/')}")
    if file is None:
        raise UsageError(f"self.config({path!r}): a file name under .github/, without '..'")
    where = f"{owner}/{repo}"
    found = await _load(github, owner, repo, file)
    if found is None and repo != DEFAULTS_REPOSITORY:
        where = f"{owner}/{DEFAULTS_REPOSITORY}"
        found = await _load(github, owner, DEFAULTS_REPOSITORY, file)
    if found is None:
        return None
    extends = found.pop("_extends", None)
    if extends is not None:
        if not isinstance(extends, str) or not extends.strip():
            raise RepositoryConfigError(where, file, "_extends must be [owner/]repo[:path]")
        target, _, other = extends.strip().partition(":")
        base_owner, _, base_repo = target.rpartition("/")
        base_file = _safe_path(other) if other else file
        names = [base_repo, *([base_owner] if base_owner else [])]
        plain = all(_NAME.match(n) and n not in (".", "..") for n in names)
        if not plain or base_file is None:
            raise RepositoryConfigError(where, file, "_extends must be [owner/]repo[:path]")
        if base_owner and base_owner.lower() != owner.lower():
            # The installation may see other owners' repositories, private ones too; a
            # file in one repository must not be able to read another owner's files.
            raise RepositoryConfigError(
                where, file, f"_extends: {extends} is another owner's; only {owner}'s are read"
            )
        base = await _load(github, owner, base_repo, base_file)
        if base is None:
            raise RepositoryConfigError(where, file, f"_extends: {extends} has no {base_file}")
        base.pop("_extends", None)  # one level, as Probot: no chains, no cycles
        found = _merged(base, found)
    try:
        return msgspec.convert(found, schema)
    except msgspec.ValidationError as exc:
        raise RepositoryConfigError(where, file, f"does not fit {_name(schema)}: {exc}") from None


async def _load(github: GitHub, owner: str, repo: str, file: str) -> dict[str, Any] | None:
    """Return the file parsed (a mapping), None if it or the repository does not exist."""
    if not (_NAME.match(owner) and _NAME.match(repo)) or repo in (".", ".."):
        raise RepositoryConfigError(f"{owner}/{repo}", file, "is not a repository name")
    try:
        answer = await github.request("GET", f"/repos/{owner}/{repo}/contents/{file}")
    except NotFound:
        return None
    data = answer.data
    if not isinstance(data, Mapping) or data.get("type") != "file":
        raise RepositoryConfigError(f"{owner}/{repo}", file, "is not a file")
    try:
        text = base64.b64decode(str(data.get("content", ""))).decode()
        parsed = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        # Where and what, never the offending line itself: the reason may be shown to
        # anyone who reads the repository (a check run), and the file may be private.
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = f"is not YAML: {exc.problem or exc.context or 'cannot be parsed'}{at}"
        raise RepositoryConfigError(f"{owner}/{repo}", file, reason) from None
    except (ValueError, yaml.YAMLError):
        raise RepositoryConfigError(f"{owner}/{repo}", file, "is not YAML text") from None
    except RecursionError:  # PyYAML builds nested values recursively
        raise RepositoryConfigError(f"{owner}/{repo}", file, "nests too deeply") from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise RepositoryConfigError(f"{owner}/{repo}", file, "is not a mapping of keys")
    return parsed


_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _safe_path(path: str) -> str | None:
    """Return `path` if it names a file in a repository plainly, else None.

    No `..`, no empty or `.` segments, nothing that would end the path in a URL.
    """
    segments = path.strip("/").split("/")
    if any(s in ("", ".", "..") or not _NAME.match(s) for s in segments):
        return None
    return "/".join(segments)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over`'s keys win; mappings under the same key merge, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _name(schema: Any) -> str:
    return getattr(schema, "__name__", None) or repr(schema)
