"""The fake's repository endpoints: issues, comments, labels, pulls, checks, statuses.

https://docs.github.com/en/rest/issues
https://docs.github.com/en/rest/pulls/pulls
https://docs.github.com/en/rest/checks/runs
https://docs.github.com/en/rest/commits/statuses
"""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any

from ghbot.testing.router import Ctx, Query, Reply, Router, error, paged
from ghbot.testing.state import Repo, Store, iso

__all__ = ["RepoRoutes"]

R = "/repos/{owner}/{repo}"
STATUS_STATES = ("error", "failure", "pending", "success")
_STATES = ("open", "closed", "all")
#: The filters of `GET /repos/{owner}/{repo}/issues` the fake honours, as GitHub does
#: (issues are listed in the order they were made: `sort=created`).
ISSUE_FILTERS: Query = {
    "state": _STATES,
    "labels": None,
    "sort": ("created",),
    "direction": ("asc", "desc"),
}
#: The filters of `GET /repos/{owner}/{repo}/pulls` the fake honours.
PULL_FILTERS: Query = {
    "state": _STATES,
    "head": None,
    "base": None,
    "sort": ("created",),
    "direction": ("asc", "desc"),
}


def missing(resource: str, field: str) -> Reply:
    """GitHub's 422 for a required field that was not sent."""
    errors = [{"resource": resource, "code": "missing_field", "field": field}]
    return error(422, "Validation Failed", errors=errors)


class RepoRoutes:
    """Handlers over a `Store`; `register` adds them to a router."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, router: Router) -> None:
        # A route honours no query parameter but paging unless it says which.
        add = functools.partial(router.add, query={})
        add("GET", R, self.get_repo)
        add("GET", f"{R}/issues", self.list_issues, query=ISSUE_FILTERS)
        add("POST", f"{R}/issues", self.create_issue)
        add("GET", f"{R}/issues/comments/{{comment_id}}", self.get_comment)
        add("PATCH", f"{R}/issues/comments/{{comment_id}}", self.update_comment)
        add("GET", f"{R}/issues/{{number}}", self.get_issue)
        add("PATCH", f"{R}/issues/{{number}}", self.update_issue)
        add("GET", f"{R}/issues/{{number}}/comments", self.list_comments)
        add("POST", f"{R}/issues/{{number}}/comments", self.create_comment)
        add("GET", f"{R}/issues/{{number}}/labels", self.list_labels)
        add("POST", f"{R}/issues/{{number}}/labels", self.add_labels)
        add("DELETE", f"{R}/issues/{{number}}/labels/{{name}}", self.remove_label)
        add("GET", f"{R}/contents/{{path*}}", self.get_content)
        add("GET", f"{R}/pulls", self.list_pulls, query=PULL_FILTERS)
        add("GET", f"{R}/pulls/{{number}}", self.get_pull)
        add("GET", f"{R}/pulls/{{number}}/reviews", self.list_reviews)
        add("POST", f"{R}/pulls/{{number}}/reviews", self.create_review)
        add("POST", f"{R}/check-runs", self.create_check_run)
        add("GET", f"{R}/check-runs/{{check_run_id}}", self.get_check_run)
        add("PATCH", f"{R}/check-runs/{{check_run_id}}", self.update_check_run)
        add("POST", f"{R}/statuses/{{sha}}", self.create_status)
        add("GET", f"{R}/commits/{{ref*}}/statuses", self.list_statuses)

    # --- lookups ----------------------------------------------------------------------

    def _repo(self, ctx: Ctx) -> Repo | Reply:
        """The repository of the path, a redirect for a renamed one, or a 404."""
        owner, name = ctx.params["owner"], ctx.params["repo"]
        repo = self.store.repo(owner, name)
        if repo is None:
            moved = self.store.renamed.get(f"{owner}/{name}".lower())
            if moved is not None and ctx.caller.can_see(moved):
                return self._moved(ctx, moved, f"/repos/{owner}/{name}")
        if repo is None or not ctx.caller.can_see(repo):
            return error(404, "Not Found")
        return repo

    def _moved(self, ctx: Ctx, repo: Repo, old_prefix: str) -> Reply:
        # 301 for reads; 307 for writes so the client repeats the method and body.
        request = ctx.request
        rest = request.path_qs.split(old_prefix, 1)[1] if old_prefix in request.path_qs else ""
        location = f"{request.url.origin()}{request.path_qs.split('/repos/', 1)[0]}"
        location += f"/repos/{repo.full_name}{rest}"
        status = 301 if request.method in ("GET", "HEAD") else 307
        return Reply(
            {"message": "Moved Permanently", "url": location}, status, {"Location": location}
        )

    def _issue(self, ctx: Ctx) -> tuple[Repo, dict[str, Any]] | Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        number = ctx.int_param("number")
        issue = repo.issues.get(number) if number is not None else None
        return (repo, issue) if issue is not None else error(404, "Not Found")

    def _user(self, ctx: Ctx) -> dict[str, Any]:
        return self.store.bot

    # --- repositories and issues ------------------------------------------------------

    def get_repo(self, ctx: Ctx) -> Reply:
        repo = self._repo(ctx)
        return repo if isinstance(repo, Reply) else Reply(repo.data)

    def list_issues(self, ctx: Ctx) -> Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        # Every one of the comma-separated labels, by name (GitHub's are case-blind).
        wanted = {n.strip().lower() for n in ctx.query.get("labels", "").split(",") if n.strip()}
        issues = [
            i
            for i in repo.issues.values()
            if wanted <= {label["name"].lower() for label in i["labels"]}
        ]
        return paged(ctx, _stated_and_ordered(ctx, issues))

    def create_issue(self, ctx: Ctx) -> Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        body = ctx.body()
        title = body.get("title")
        if not title:
            return missing("Issue", "title")
        issue = self.store.make_issue(repo, str(title), body.get("body"), self._user(ctx))
        issue["labels"] = [self.store.label(repo, str(n)) for n in body.get("labels") or ()]
        return Reply(issue, 201, {"Location": issue["url"]})

    def get_issue(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        return found if isinstance(found, Reply) else Reply(found[1])

    def update_issue(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        if isinstance(found, Reply):
            return found
        repo, issue = found
        body = ctx.body()
        for key in ("title", "body"):
            if key in body:
                issue[key] = body[key]
        state = body.get("state")
        state = state if state in ("open", "closed") else issue["state"]
        self.store.set_state(repo, issue, state, body.get("state_reason"))
        if "labels" in body:
            issue["labels"] = [self.store.label(repo, str(n)) for n in body["labels"] or ()]
        issue["updated_at"] = iso(self.store.clock())
        return Reply(issue)

    # --- comments ---------------------------------------------------------------------

    def list_comments(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        if isinstance(found, Reply):
            return found
        repo, issue = found
        return paged(ctx, repo.comments.get(issue["number"], []))

    def create_comment(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        if isinstance(found, Reply):
            return found
        text = ctx.body().get("body")
        if not text:
            return missing("IssueComment", "body")
        comment = self.store.make_comment(found[0], found[1], str(text), self._user(ctx))
        return Reply(comment, 201, {"Location": comment["url"]})

    def _comment(self, ctx: Ctx) -> dict[str, Any] | Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        comment_id = ctx.int_param("comment_id")
        found = self.store.comments_by_id.get(comment_id) if comment_id is not None else None
        if found is None or found[0] is not repo:
            return error(404, "Not Found")
        return found[1]

    def get_comment(self, ctx: Ctx) -> Reply:
        comment = self._comment(ctx)
        return comment if isinstance(comment, Reply) else Reply(comment)

    def update_comment(self, ctx: Ctx) -> Reply:
        comment = self._comment(ctx)
        if isinstance(comment, Reply):
            return comment
        text = ctx.body().get("body")
        if not text:
            return missing("IssueComment", "body")
        comment.update(body=str(text), updated_at=iso(self.store.clock()))
        return Reply(comment)

    # --- labels -----------------------------------------------------------------------

    def list_labels(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        return found if isinstance(found, Reply) else paged(ctx, found[1]["labels"])

    def add_labels(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        if isinstance(found, Reply):
            return found
        repo, issue = found
        names = ctx.json if isinstance(ctx.json, list) else ctx.body().get("labels")
        if not isinstance(names, list):
            return missing("Label", "labels")
        have = {label["name"].lower() for label in issue["labels"]}
        for name in names:
            if str(name).lower() not in have:
                issue["labels"].append(self.store.label(repo, str(name)))
                have.add(str(name).lower())
        return Reply(issue["labels"])

    def remove_label(self, ctx: Ctx) -> Reply:
        found = self._issue(ctx)
        if isinstance(found, Reply):
            return found
        issue, name = found[1], ctx.params["name"].lower()
        kept = [label for label in issue["labels"] if label["name"].lower() != name]
        if len(kept) == len(issue["labels"]):
            return error(404, "Label does not exist")
        issue["labels"] = kept
        return Reply(kept)

    # --- pull requests ----------------------------------------------------------------

    def list_pulls(self, ctx: Ctx) -> Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        head, base = _head_filter(ctx.query.get("head")), ctx.query.get("base")
        every = (self.store.pull(repo, number) for number in repo.pulls)
        pulls = [
            p
            for p in every
            if p is not None
            and head in (None, _head_of(p["head"]["label"]))
            and base in (None, p["base"]["ref"])
        ]
        return paged(ctx, _stated_and_ordered(ctx, pulls))

    def get_pull(self, ctx: Ctx) -> Reply:
        found = self._pull(ctx)
        return found if isinstance(found, Reply) else Reply(found[1])

    def _pull(self, ctx: Ctx) -> tuple[Repo, dict[str, Any]] | Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        pull = self.store.pull(repo, ctx.int_param("number"))
        return (repo, pull) if pull is not None else error(404, "Not Found")

    def create_review(self, ctx: Ctx) -> Reply:
        """A review; `REQUEST_CHANGES` and `COMMENT` need a body, as on GitHub."""
        found = self._pull(ctx)
        if isinstance(found, Reply):
            return found
        repo, pull = found
        body = ctx.body()
        event = body.get("event")
        if event not in (None, "APPROVE", "REQUEST_CHANGES", "COMMENT"):
            return error(422, "Unprocessable Entity", errors=[f"Unknown event {event!r}"])
        if event in ("REQUEST_CHANGES", "COMMENT") and not body.get("body"):
            return error(422, "Unprocessable Entity", errors=["Review Can't be blank"])
        return Reply(self.store.make_review(repo, pull, body))

    def list_reviews(self, ctx: Ctx) -> Reply:
        found = self._pull(ctx)
        if isinstance(found, Reply):
            return found
        repo, pull = found
        return paged(ctx, repo.reviews.get(pull["number"], []))

    def get_content(self, ctx: Ctx) -> Reply:
        """A file as the contents API gives it: base64 in lines of 60, with its blob SHA."""
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        path = ctx.params["path"].strip("/")
        text = repo.files.get(path)
        if text is None:
            return error(404, "Not Found")
        raw = text.encode()
        encoded = base64.b64encode(raw).decode()
        sha = hashlib.sha1(b"blob %d\0" % len(raw) + raw, usedforsecurity=False).hexdigest()
        url = f"{self.store.base}/repos/{repo.full_name}/contents/{path}"
        return Reply(
            {
                "type": "file",
                "encoding": "base64",
                "size": len(raw),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "sha": sha,
                "url": url,
                "html_url": f"https://github.com/{repo.full_name}/blob/main/{path}",
                "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)),
            }
        )

    # --- checks and statuses ----------------------------------------------------------

    def create_check_run(self, ctx: Ctx) -> Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        body = ctx.body()
        for required in ("name", "head_sha"):
            if not body.get(required):
                return missing("CheckRun", required)
        run = self.store.make_check_run(repo, body)
        return Reply(run, 201)

    def _check_run(self, ctx: Ctx) -> dict[str, Any] | Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        run_id = ctx.int_param("check_run_id")
        run = repo.check_runs.get(run_id) if run_id is not None else None
        return run if run is not None else error(404, "Not Found")

    def get_check_run(self, ctx: Ctx) -> Reply:
        run = self._check_run(ctx)
        return run if isinstance(run, Reply) else Reply(run)

    def update_check_run(self, ctx: Ctx) -> Reply:
        run = self._check_run(ctx)
        if isinstance(run, Reply):
            return run
        run.update(ctx.body())
        if run.get("conclusion") and run.get("status") != "completed":
            run["status"] = "completed"
        if run["status"] == "completed" and not run.get("completed_at"):
            run["completed_at"] = iso(self.store.clock())
        return Reply(run)

    def create_status(self, ctx: Ctx) -> Reply:
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        body = ctx.body()
        if body.get("state") not in STATUS_STATES:
            message = f"state is not included in the list {list(STATUS_STATES)}"
            errors = [
                {"resource": "Status", "code": "custom", "field": "state", "message": message}
            ]
            return error(422, "Validation Failed", errors=errors)
        status = self.store.make_status(repo, ctx.params["sha"], body)
        return Reply(status, 201, {"Location": str(status["url"])})

    def list_statuses(self, ctx: Ctx) -> Reply:
        """The statuses of the commit `ref` names: a SHA, or a branch (`feature/x`,
        `heads/feature/x`) at its head, newest first."""
        repo = self._repo(ctx)
        if isinstance(repo, Reply):
            return repo
        sha = self.store.commit_of(repo, ctx.params["ref"])
        return paged(ctx, [s for s in reversed(repo.statuses) if s["sha"] == sha])


def _stated_and_ordered(ctx: Ctx, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`found` (in creation order) with the list's `state` (`open` unless asked; `all`)
    and in its `direction` (`desc`, newest first, unless asked)."""
    state = ctx.query.get("state", "open")
    kept = [item for item in found if state == "all" or item["state"] == state]
    return kept[::-1] if ctx.query.get("direction", "desc") == "desc" else kept


def _head_filter(head: str | None) -> tuple[str, str] | None:
    """A pull request list's `head` as GitHub reads it: `user:ref-name`, the login
    case-blind; a head without `user:` is ignored, as GitHub ignores it
    (https://github.com/github/docs/issues/16647)."""
    if head is None or ":" not in head:
        return None
    return _head_of(head)


def _head_of(label: str) -> tuple[str, str]:
    owner, _, ref = label.partition(":")
    return owner.lower(), ref
