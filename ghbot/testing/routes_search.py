"""The fake's search of issues and pull requests: free words in titles, and the
qualifiers it implements; a term it does not is answered 501, naming it.

https://docs.github.com/en/rest/search/search#search-issues-and-pull-requests
https://docs.github.com/en/search-github/searching-on-github/searching-issues-and-pull-requests
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from ghbot.testing.documented import not_implemented
from ghbot.testing.router import Ctx, Reply, Router, paged
from ghbot.testing.state import Repo, Store

__all__ = ["SearchRoutes"]

#: Whether an issue of a repository matches one term of a search.
Match = Callable[[Repo, dict[str, Any]], bool]


class SearchRoutes:
    """`GET /search/issues` over a `Store`; `register` adds it to a router."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, router: Router) -> None:
        # `sort` and `order` are not honoured: answered 501 (the fake lists by number).
        router.add("GET", "/search/issues", self.search_issues, query={"q": None})

    def search_issues(self, ctx: Ctx) -> Reply:
        """Issues and pull requests whose titles hold every free word, with the
        qualifiers `_search_term` reads; any other term is answered 501, naming it."""
        repos = [r for r in self.store.repos.values() if ctx.caller.can_see(r)]
        tests = []
        for term in _TERM.findall(ctx.query.get("q", "")):
            test = _search_term(term)
            if test is None:
                part = f"the search term {term!r}"
                message = not_implemented("GET", "/search/issues", part=part)
                return Reply({"message": message}, 501)
            tests.append(test)
        found = [
            issue
            for repo in repos
            for issue in repo.issues.values()
            if all(test(repo, issue) for test in tests)
        ]
        return paged(ctx, found, wrap="items", incomplete_results=False)


#: One term of a search: a qualifier with a quoted value (`label:"good first issue"`),
#: a phrase, or a run of anything but spaces.
_TERM: Final = re.compile(r'-?\w+:"[^"]*"|"[^"]*"|\S+')
_QUOTED: Final = re.compile(r'"[^"]+"')


def _search_term(term: str) -> Match | None:
    """What an issue of a repository must be to match one term of an issue search, or
    None for a term the fake does not implement. A free word is looked for in titles
    only (the fake searches as `in:title` does); an exclusion (`-word`), a phrase, a
    list of values and `AND`, `OR`, `NOT` are not implemented; a label's name may be
    quoted (`label:"good first issue"`).
    """
    key, colon, value = term.partition(":")
    if key in ("label", "-label") and _QUOTED.fullmatch(value):
        return _qualifier(key, value[1:-1].lower())
    if '"' in term or "," in value or term in ("AND", "OR", "NOT"):
        return None
    if colon:
        return _qualifier(key, value.lower())
    if term.startswith("-"):
        return None
    return lambda repo, issue: term.lower() in issue["title"].lower()


def _qualifier(key: str, value: str) -> Match | None:
    """`repo:o/r`, `is:`/`state:` open or closed, `is:`/`type:` issue or pr, `label:`
    and `-label:` one label, `author:login` and `in:title`; None for any other."""
    if key == "repo":
        return lambda repo, issue: repo.full_name.lower() == value
    if key in ("is", "state") and value in ("open", "closed"):
        return lambda repo, issue: issue["state"] == value
    if key in ("is", "type") and value in ("issue", "pr"):
        return lambda repo, issue: ("pull_request" in issue) == (value == "pr")
    if key in ("label", "-label") and value:
        has = key == "label"
        return lambda repo, issue: (
            has == any(label["name"].lower() == value for label in issue["labels"])
        )
    if key == "author":
        return lambda repo, issue: str(issue["user"]["login"]).lower() == value
    if key == "in" and value == "title":
        return lambda repo, issue: True
    return None
