"""A typed surface over GitHub's REST API, generated from GitHub's official description.

`GitHub.rest` is a `Rest`: `await gh.rest.issues.create_comment(owner=…, repo=…,
issue_number=…, body=…)` returns an `IssueComment` (a `Model`, in `ghbot.rest.models`),
and `gh.rest.paginate(gh.rest.issues.list_for_repo, owner=…, repo=…)` yields typed
items page after page. Each namespace's module is imported on first use; importing
this package imports none of them. The source package and version are in the
generated modules' headers; see docs/rest.md and `scripts/gen_rest.py`.
"""

from __future__ import annotations

from ghbot.rest.operation import Model, Namespace, Op, Paged
from ghbot.rest.root import NAMESPACES, Rest

__all__ = ["NAMESPACES", "Model", "Namespace", "Op", "Paged", "Rest"]
