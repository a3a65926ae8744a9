"""What a webhook payload says of its issue or pull request, put in the fake's store.

`BotHarness` creates the issue or pull request a delivery is about when the fake lacks
it, and updates one it made when a later delivery is about it and the bot has not
changed it since (`seeded` tells); these make it the one the payload describes, so a
handler's `issues.get` or `pulls.get` answers what the delivery said. Timestamps stay
the fake clock's: the payload's (an example's are from 2019) would not move with it.
https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ghbot.testing.state import Repo, Store

__all__ = ["seed_issue", "seed_pull", "seeded"]

#: An issue's fields taken from the payload as they are.
_ISSUE_FIELDS = ("title", "body", "state_reason", "locked")


def seed_issue(store: Store, repo: Repo, issue: dict[str, Any], given: Mapping[str, Any]) -> None:
    """Set `issue`'s fields from `given`, a payload's `issue` or `pull_request` object:
    title, body, state (with `closed_at` and the repository's open count),
    `state_reason`, `locked`, labels (the repository's, made as adding them makes
    them), assignees and author. A field `given` lacks is left as it is."""
    if given.get("state") in ("open", "closed"):
        store.set_state(repo, issue, str(given["state"]))
    for key in _ISSUE_FIELDS:  # after the state: the payload's `state_reason`, null too
        if key in given:
            issue[key] = given[key]
    labels = given.get("labels")
    if isinstance(labels, list):
        names = [label["name"] for label in labels if isinstance(label, Mapping)]
        issue["labels"] = [store.label(repo, str(name)) for name in names]
    assignees = given.get("assignees")
    if isinstance(assignees, list):
        issue["assignees"] = [dict(user) for user in assignees if isinstance(user, Mapping)]
    if isinstance(given.get("user"), Mapping):
        issue["user"] = dict(given["user"])


def seed_pull(repo: Repo, pull: dict[str, Any], given: Mapping[str, Any]) -> None:
    """Set `pull`'s own fields from `given`, a payload's `pull_request`: `draft`,
    `merged` (with `merged_at`, its `closed_at`), `merge_commit_sha`, and its head's
    and base's ref and SHA (its fields an issue has are its issue's, `seed_issue`'s;
    `pull` is answered with them, `Store.pull`). A field `given` lacks is left as it
    is."""
    for key in ("draft", "merged"):
        if isinstance(given.get(key), bool):
            pull[key] = given[key]
    pull["merged_at"] = pull["closed_at"] if pull["merged"] else None
    if isinstance(given.get("merge_commit_sha"), str):
        pull["merge_commit_sha"] = given["merge_commit_sha"]
    owner = repo.data["owner"]["login"]
    for side in ("head", "base"):
        end = given.get(side)
        if not isinstance(end, Mapping):
            continue
        for key in ("ref", "sha"):
            if isinstance(end.get(key), str):
                pull[side][key] = end[key]
        pull[side]["label"] = str(end.get("label") or f"{owner}:{pull[side]['ref']}")


def seeded(store: Store, repo: Repo, number: int) -> dict[str, Any]:
    """Return what `seed_issue` and `seed_pull` set of issue (or pull request)
    `number` of `repo`, as it is now: compared with what it was when a delivery set it,
    it tells whether anything else (the bot) has changed it since."""
    issue = repo.issues[number]
    now: dict[str, Any] = {key: issue[key] for key in (*_ISSUE_FIELDS, "state")}
    now["labels"] = [label["name"] for label in issue["labels"]]
    now["assignees"] = [user.get("login") for user in issue["assignees"]]
    now["user"] = issue["user"].get("login")
    pull = store.pull(repo, number)
    if pull is not None:
        now.update({key: pull[key] for key in ("draft", "merged", "merge_commit_sha")})
        now.update({side: dict(pull[side]) for side in ("head", "base")})
    return now
