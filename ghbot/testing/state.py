"""The fake GitHub's data: installations, repositories, issues, comments and the rest.

Objects are kept as the JSON GitHub answers (plain dicts), trimmed to the fields bots
use most; URLs point at the fake.
https://docs.github.com/en/rest/issues/issues
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Caller", "Installation", "Repo", "Store", "iso"]

Clock = Callable[[], float]
#: The fields a pull request shares with the issue of the same number: the issue's are
#: the ones the routes change, and a pull request's are read from it (`Store.pull`).
_SHARED_PULL_FIELDS = (
    "id",
    "number",
    "title",
    "body",
    "state",
    "locked",
    "user",
    "labels",
    "assignees",
    "created_at",
    "updated_at",
    "closed_at",
)


def iso(ts: float) -> str:
    """Format epoch seconds as GitHub does (`2024-01-01T00:00:00Z`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(slots=True)
class Installation:
    id: int
    account: dict[str, Any]
    repository_ids: list[int] = field(default_factory=list)
    permissions: dict[str, str] = field(default_factory=dict)
    repository_selection: str = "selected"


@dataclass(slots=True)
class Repo:
    data: dict[str, Any]
    installation_id: int
    #: Issues and pull requests share one number space, as on GitHub.
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    #: The default branch's files, by path (`ghbot.testing.FakeGitHub.add_file`).
    files: dict[str, str] = field(default_factory=dict)
    #: Each pull request's reviews, by its number, in creation order.
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    next_number: int = 1

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def full_name(self) -> str:
        return str(self.data["full_name"])


@dataclass(slots=True)
class Caller:
    """Who sent a request: `kind` is "installation", "app" or "anonymous".

    `key` names the rate-limit bucket; `token` is the credential itself (for ETags).
    """

    kind: str
    key: str
    token: str = field(default="", repr=False)  # a credential, if only the fake's
    installation: Installation | None = None
    repository_ids: frozenset[int] | None = None

    def can_see(self, repo: Repo) -> bool:
        """Tell whether this caller's token reaches `repo` (else GitHub answers 404)."""
        if self.installation is None or repo.installation_id != self.installation.id:
            return False
        return self.repository_ids is None or repo.id in self.repository_ids


class Store:
    """Everything the fake holds, with builders for GitHub-shaped objects."""

    def __init__(self, clock: Clock, app_slug: str) -> None:
        self.clock = clock
        self.app_slug = app_slug
        self.base = "http://127.0.0.1"
        self.installations: dict[int, Installation] = {}
        self.repos: dict[str, Repo] = {}
        self.repos_by_id: dict[int, Repo] = {}
        #: old full name (lower case) → the repository, for renamed repositories.
        self.renamed: dict[str, Repo] = {}
        self.comments_by_id: dict[int, tuple[Repo, dict[str, Any]]] = {}
        self._ids = itertools.count(1000)
        self.bot = {
            "login": f"{app_slug}[bot]",
            "id": 9_000_001,
            "node_id": "BOT_kgDOAAAAAQ",
            "type": "Bot",
            "site_admin": False,
        }

    def new_id(self) -> int:
        return next(self._ids)

    # --- setup ------------------------------------------------------------------------

    def add_installation(
        self,
        installation_id: int | None,
        account: str,
        repositories: Iterable[str],
        permissions: dict[str, str] | None,
    ) -> Installation:
        inst_id = installation_id or self.new_id()
        kind = "Organization" if not account.endswith("-user") else "User"
        owner = {"login": account, "id": self.new_id(), "type": kind}
        perms = permissions or {
            "issues": "write",
            "pull_requests": "write",
            "checks": "write",
            "statuses": "write",
            "metadata": "read",
        }
        inst = Installation(inst_id, owner, permissions=perms)
        self.installations[inst_id] = inst
        for name in repositories:
            self.add_repo(name if "/" in name else f"{account}/{name}", inst_id)
        return inst

    def add_repo(self, full_name: str, installation_id: int) -> Repo:
        owner, name = full_name.split("/", 1)
        inst = self.installations[installation_id]
        repo_id = self.new_id()
        data = {
            "id": repo_id,
            "node_id": f"R_{repo_id}",
            "name": name,
            "full_name": full_name,
            "private": False,
            "owner": {**inst.account, "login": owner},
            "html_url": f"https://github.com/{full_name}",
            "url": f"{self.base}/repos/{full_name}",
            "default_branch": "main",
            "open_issues_count": 0,
        }
        repo = Repo(data, installation_id)
        self.repos[full_name.lower()] = repo
        self.repos_by_id[repo_id] = repo
        inst.repository_ids.append(repo_id)
        return repo

    def rename(self, full_name: str, new_full_name: str) -> Repo:
        repo = self.repos.pop(full_name.lower())
        self.renamed[full_name.lower()] = repo
        name = new_full_name.split("/", 1)[1]
        repo.data.update(
            name=name, full_name=new_full_name, url=f"{self.base}/repos/{new_full_name}"
        )
        self.repos[new_full_name.lower()] = repo
        return repo

    def repo(self, owner: str, name: str) -> Repo | None:
        return self.repos.get(f"{owner}/{name}".lower())

    # --- builders ---------------------------------------------------------------------

    def make_issue(
        self, repo: Repo, title: str, body: str | None, user: dict[str, Any]
    ) -> dict[str, Any]:
        number = repo.next_number
        repo.next_number += 1
        issue_id = self.new_id()
        url = f"{self.base}/repos/{repo.full_name}/issues/{number}"
        now = iso(self.clock())
        issue: dict[str, Any] = {
            "id": issue_id,
            "node_id": f"I_{issue_id}",
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "state_reason": None,
            "locked": False,
            "labels": [],
            "assignees": [],
            "user": user,
            "comments": 0,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "url": url,
            "html_url": f"https://github.com/{repo.full_name}/issues/{number}",
            "repository_url": repo.data["url"],
            "comments_url": f"{url}/comments",
            "labels_url": f"{url}/labels{{/name}}",
        }
        repo.issues[number] = issue
        repo.data["open_issues_count"] += 1
        return issue

    def set_state(
        self, repo: Repo, issue: dict[str, Any], state: str, reason: str | None = None
    ) -> None:
        """Open or close `issue` ("open" or "closed"), with its `closed_at`, the
        repository's count of open issues, and its `state_reason`: `reason` if given,
        else `completed` when closed and `reopened` when reopened, as GitHub gives it.
        https://docs.github.com/en/rest/issues/issues#update-an-issue"""
        if state != issue["state"]:
            closed = state == "closed"
            issue["state"] = state
            issue["closed_at"] = iso(self.clock()) if closed else None
            issue["state_reason"] = reason or ("completed" if closed else "reopened")
            repo.data["open_issues_count"] += -1 if closed else 1
        elif reason is not None:
            issue["state_reason"] = reason

    def make_comment(
        self, repo: Repo, issue: dict[str, Any], body: str, user: dict[str, Any]
    ) -> dict[str, Any]:
        comment_id = next(self._ids)
        now = iso(self.clock())
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "body": body,
            "user": user,
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
            "issue_url": issue["url"],
            "url": f"{self.base}/repos/{repo.full_name}/issues/comments/{comment_id}",
            "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
        }
        repo.comments.setdefault(issue["number"], []).append(comment)
        self.comments_by_id[comment_id] = (repo, comment)
        issue["comments"] += 1
        return comment

    def label(self, repo: Repo, name: str) -> dict[str, Any]:
        """Return the repository's label `name`, creating it as GitHub does when adding."""
        found = repo.labels.get(name.lower())
        if found is None:
            label_id = self.new_id()
            found = {
                "id": label_id,
                "node_id": f"LA_{label_id}",
                "url": f"{self.base}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "color": "ededed",
                "default": False,
                "description": None,
            }
            repo.labels[name.lower()] = found
        return found

    def make_pull(
        self, repo: Repo, title: str, head: str, head_sha: str, base: str
    ) -> dict[str, Any]:
        issue = self.make_issue(repo, title, None, self.bot)
        return self.pull_of(repo, issue, head, head_sha, base)

    def pull_of(
        self,
        repo: Repo,
        issue: dict[str, Any],
        head: str = "feature",
        head_sha: str = "a" * 40,
        base: str = "main",
    ) -> dict[str, Any]:
        """Make `issue` a pull request (GitHub's pull requests are issues too)."""
        number = issue["number"]
        url = f"{self.base}/repos/{repo.full_name}/pulls/{number}"
        issue["pull_request"] = {
            "url": url,
            "html_url": f"https://github.com/{repo.full_name}/pull/{number}",
        }
        pull = {
            **{k: issue[k] for k in _SHARED_PULL_FIELDS},
            "node_id": f"PR_{issue['id']}",
            "url": url,
            "html_url": issue["pull_request"]["html_url"],
            "draft": False,
            "merged": False,
            "merged_at": None,
            "merge_commit_sha": None,
            "head": {
                "ref": head,
                "sha": head_sha,
                "label": f"{repo.data['owner']['login']}:{head}",
            },
            "base": {
                "ref": base,
                "sha": "0" * 40,
                "label": f"{repo.data['owner']['login']}:{base}",
            },
        }
        repo.pulls[number] = pull
        return pull

    def pull(self, repo: Repo, number: int | None) -> dict[str, Any] | None:
        """Return pull request `number` of `repo` (None: there is none), its fields an
        issue has (state, title, labels, ...) as its issue's are now: closing or
        labelling it through the issue endpoints closes or labels the pull request,
        as on GitHub."""
        pull = repo.pulls.get(number) if number is not None else None
        if pull is not None:
            issue = repo.issues[pull["number"]]
            pull.update({k: issue[k] for k in _SHARED_PULL_FIELDS})
        return pull

    def make_check_run(self, repo: Repo, fields: dict[str, Any]) -> dict[str, Any]:
        run_id = self.new_id()
        run: dict[str, Any] = {
            "id": run_id,
            "node_id": f"CR_{run_id}",
            "status": "queued",
            "conclusion": None,
            "started_at": iso(self.clock()),
            "completed_at": None,
            "output": {},
            "url": f"{self.base}/repos/{repo.full_name}/check-runs/{run_id}",
            "html_url": f"https://github.com/{repo.full_name}/runs/{run_id}",
            "app": {"slug": self.app_slug},
            **fields,
        }
        repo.check_runs[run_id] = run
        return run

    def make_review(
        self, repo: Repo, pull: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Record a review of `pull`: submitted for an `event`, else pending."""
        review_id = self.new_id()
        event = fields.get("event")
        state = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}.get(
            event or "", "COMMENTED" if event == "COMMENT" else "PENDING"
        )
        url = f"{self.base}/repos/{repo.full_name}/pulls/{pull['number']}"
        html = f"https://github.com/{repo.full_name}/pull/{pull['number']}"
        review = {
            "id": review_id,
            "node_id": f"PRR_{review_id}",
            "user": self.bot,
            "body": fields.get("body") or "",
            "state": state,
            "html_url": f"{html}#pullrequestreview-{review_id}",
            "pull_request_url": url,
            "_links": {"html": {"href": html}, "pull_request": {"href": url}},
            "submitted_at": None if state == "PENDING" else iso(self.clock()),
            "commit_id": fields.get("commit_id") or pull["head"]["sha"],
            "author_association": "NONE",
        }
        repo.reviews.setdefault(pull["number"], []).append(review)
        return review

    def commit_of(self, repo: Repo, ref: str) -> str:
        """The commit SHA `ref` names in `repo`, as GitHub reads a commit reference: a
        branch, by its name or as `heads/NAME`, is its head's SHA; anything else is
        taken as a SHA. The fake's branches are its pull requests' heads (the latest
        pull request's head, for a branch several have); it keeps no tags."""
        heads = {pull["head"]["ref"]: pull["head"]["sha"] for pull in repo.pulls.values()}
        for name in (ref, ref.removeprefix("heads/")):
            if name in heads:
                return str(heads[name])
        return ref

    def make_status(self, repo: Repo, sha: str, fields: dict[str, Any]) -> dict[str, Any]:
        status_id = self.new_id()
        status = {
            "id": status_id,
            "node_id": f"SC_{status_id}",
            "sha": sha,
            "state": fields["state"],
            "description": fields.get("description"),
            "target_url": fields.get("target_url"),
            "context": fields.get("context", "default"),
            "created_at": iso(self.clock()),
            "creator": self.bot,
            "url": f"{self.base}/repos/{repo.full_name}/statuses/{sha}",
        }
        repo.statuses.append(status)
        return status
