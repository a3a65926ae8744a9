"""The fake's app-level endpoints: the app, installations, tokens, rate limit, GraphQL.

https://docs.github.com/en/rest/apps/apps
https://docs.github.com/en/rest/apps/installations#list-repositories-accessible-to-the-app-installation
https://docs.github.com/en/rest/rate-limit/rate-limit
"""

from __future__ import annotations

import functools
from typing import Any

from ghbot.testing.graphql import Resolvers, execute
from ghbot.testing.identity import Identities, Quotas
from ghbot.testing.router import Ctx, Reply, Router, error, paged
from ghbot.testing.state import Caller, Installation, Repo, Store, iso

__all__ = ["AppRoutes"]

MSG_REPOS = (
    "There is at least one repository that does not exist or is not accessible to the "
    "parent installation."
)
MSG_PERMISSIONS = "The permissions requested are not granted to this installation."
#: GHES's answer to `GET /rate_limit` with rate limits off (a 404), as reported by its
#: users (e.g. vermiculus/magithub#104, actions/stale#1227).
MSG_LIMITS_OFF = "Rate limiting is not enabled."
_LEVEL = {"read": 1, "write": 2, "admin": 3}


class AppRoutes:
    """Handlers for what the app and its installations ask about themselves."""

    def __init__(self, store: Store, identities: Identities, quotas: Quotas, app_id: int) -> None:
        self.store = store
        self.identities = identities
        self.quotas = quotas
        self.app_id = app_id

    def register(self, router: Router) -> None:
        # Each honours no query parameter but paging (`since`, `outdated` of
        # `/app/installations` are answered 501).
        add = functools.partial(router.add, query={})
        add("GET", "/", self.root, auth="any")
        add("GET", "/rate_limit", self.rate_limit, auth="any", counted=False)
        add("GET", "/app", self.app, auth="jwt")
        add("GET", "/app/installations", self.installations, auth="jwt")
        add("GET", "/app/installations/{installation_id}", self.installation, auth="jwt")
        tokens = "/app/installations/{installation_id}/access_tokens"
        add("POST", tokens, self.access_token, auth="jwt")
        add("GET", "/installation/repositories", self.repositories)
        add("POST", "/graphql", self.graphql)

    def root(self, ctx: Ctx) -> Reply:
        base = self.store.base
        return Reply(
            {
                "current_user_url": f"{base}/user",
                "repository_url": f"{base}/repos/{{owner}}/{{repo}}",
            }
        )

    def rate_limit(self, ctx: Ctx) -> Reply:
        if not self.quotas.enabled:
            return error(404, MSG_LIMITS_OFF)
        caller = ctx.caller
        resources = {}
        for resource in ("core", "search", "code_search", "graphql"):
            quota = self.quotas.get(caller.key, resource)
            used = quota.limit - quota.remaining
            resources[resource] = {
                "limit": quota.limit,
                "remaining": quota.remaining,
                "used": used,
                "reset": int(quota.reset),
            }
        return Reply({"resources": resources, "rate": resources["core"]})

    def app(self, ctx: Ctx) -> Reply:
        slug = self.store.app_slug
        data = {
            "id": self.app_id,
            "slug": slug,
            "name": slug,
            "installations_count": len(self.store.installations),
        }
        return Reply(data)

    def installations(self, ctx: Ctx) -> Reply:
        return paged(ctx, [self._installation(i) for i in self.store.installations.values()])

    def installation(self, ctx: Ctx) -> Reply:
        inst = self._find(ctx)
        return Reply(self._installation(inst)) if inst is not None else error(404, "Not Found")

    def access_token(self, ctx: Ctx) -> Reply:
        """Issue a token, narrowed to `repositories`/`repository_ids` and `permissions`."""
        inst = self._find(ctx)
        if inst is None:
            return error(404, "Not Found")
        body = ctx.body()
        repo_ids = self._narrow(inst, body.get("repositories"), body.get("repository_ids"))
        if isinstance(repo_ids, Reply):
            return repo_ids
        wanted = body.get("permissions")
        if wanted is not None and not _within(wanted, inst.permissions):
            return error(422, MSG_PERMISSIONS)
        grant = self.identities.issue(inst, repo_ids, wanted)
        data: dict[str, Any] = {
            "token": grant.token,
            "expires_at": iso(grant.expires_at),
            "permissions": grant.permissions,
            "repository_selection": "selected"
            if repo_ids is not None
            else inst.repository_selection,
        }
        if repo_ids is not None:
            data["repositories"] = [self.store.repos_by_id[i].data for i in sorted(repo_ids)]
        return Reply(data, 201)

    def repositories(self, ctx: Ctx) -> Reply:
        caller = ctx.caller
        if caller.installation is None:
            return error(403, "Resource not accessible by integration")
        repos = [self.store.repos_by_id[i] for i in caller.installation.repository_ids]
        visible = [r.data for r in repos if caller.can_see(r)]
        selection = caller.installation.repository_selection
        return paged(ctx, visible, wrap="repositories", repository_selection=selection)

    def graphql(self, ctx: Ctx) -> Reply:
        body = ctx.body()
        query = body.get("query")
        if not isinstance(query, str):
            return error(400, "A query attribute must be specified and must be a string.")
        variables = body.get("variables") if isinstance(body.get("variables"), dict) else {}
        return Reply(execute(query, variables, None, self._resolvers(ctx.caller)))

    # --- helpers ----------------------------------------------------------------------

    def _find(self, ctx: Ctx) -> Installation | None:
        inst_id = ctx.int_param("installation_id")
        return self.store.installations.get(inst_id) if inst_id is not None else None

    def _installation(self, inst: Installation) -> dict[str, Any]:
        base = self.store.base
        return {
            "id": inst.id,
            "account": inst.account,
            "app_id": self.app_id,
            "app_slug": self.store.app_slug,
            "target_type": inst.account["type"],
            "permissions": inst.permissions,
            "repository_selection": inst.repository_selection,
            "access_tokens_url": f"{base}/app/installations/{inst.id}/access_tokens",
            "repositories_url": f"{base}/installation/repositories",
            "events": ["issues", "issue_comment", "pull_request", "check_run"],
        }

    def _narrow(self, inst: Installation, names: Any, ids: Any) -> frozenset[int] | Reply | None:
        if names is None and ids is None:
            return None
        chosen: set[int] = set()
        for name in names or ():
            repo = self.store.repo(str(inst.account["login"]), str(name))
            if repo is None or repo.installation_id != inst.id:
                return error(422, MSG_REPOS)
            chosen.add(repo.id)
        for repo_id in ids or ():
            if repo_id not in inst.repository_ids:
                return error(422, MSG_REPOS)
            chosen.add(int(repo_id))
        return frozenset(chosen)

    def _resolvers(self, caller: Caller) -> Resolvers:
        store = self.store

        def viewer(_: Any, args: dict[str, Any]) -> tuple[Any, str]:
            return {"login": store.bot["login"], "id": store.bot["node_id"]}, "User"

        def repository(_: Any, args: dict[str, Any]) -> tuple[Any, str]:
            repo = store.repo(str(args.get("owner")), str(args.get("name")))
            if repo is None or not caller.can_see(repo):
                name = f"{args.get('owner')}/{args.get('name')}"
                raise LookupError(f"Could not resolve to a Repository with the name '{name}'.")
            return repo, "Repository"

        def issue(repo: Repo, args: dict[str, Any]) -> tuple[Any, str]:
            found = repo.issues.get(int(args.get("number", 0)))
            if found is None:
                number = args.get("number")
                raise LookupError(f"Could not resolve to an Issue with the number of {number}.")
            return _graph(found), "Issue"

        def pull(repo: Repo, args: dict[str, Any]) -> tuple[Any, str]:
            found = store.pull(repo, int(args.get("number", 0)))
            if found is None:
                number = args.get("number")
                raise LookupError(
                    f"Could not resolve to a PullRequest with the number of {number}."
                )
            return _graph(found), "PullRequest"

        def repo_field(key: str) -> Any:
            return lambda repo, args: (repo.data[key], "String")

        return {
            ("Query", "viewer"): viewer,
            ("Query", "repository"): repository,
            ("Repository", "issue"): issue,
            ("Repository", "pullRequest"): pull,
            ("Repository", "name"): repo_field("name"),
            ("Repository", "nameWithOwner"): repo_field("full_name"),
            ("Repository", "id"): repo_field("node_id"),
            ("Repository", "databaseId"): repo_field("id"),
        }


def _graph(obj: dict[str, Any]) -> dict[str, Any]:
    """A REST object in GraphQL's spelling: `id` is the node ID, `state` in capitals
    (a merged pull request's is `MERGED`, GraphQL's `PullRequestState`)."""
    state = "MERGED" if obj.get("merged") else str(obj["state"]).upper()
    author = {"login": obj["user"]["login"]}
    return {**obj, "id": obj["node_id"], "database_id": obj["id"], "state": state, "author": author}


def _within(wanted: Any, granted: dict[str, str]) -> bool:
    if not isinstance(wanted, dict):
        return False
    return all(
        _LEVEL.get(str(level), 9) <= _LEVEL.get(granted.get(name, ""), 0)
        for name, level in wanted.items()
    )
