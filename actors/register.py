"""`ghbot register`: create the bot's GitHub App from a manifest, and keep its secrets.

GitHub's manifest flow: a page on this machine posts a form with the App's manifest to
GitHub (`/settings/apps/new`, or an organization's); the user names the App and
confirms it there; GitHub redirects back here with a one-time code, which this side
converts (`POST /app-manifests/{code}/conversions`) into the App's ID, webhook secret
and private key. They are written to `.env` and a key file next to it, both readable
by their owner only (mode 0600). The manifest's events are the ones the bot's `@on`
handlers name; its permissions are read access for each of them, raised by the bot
class's `permissions`.

https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from actors.bot import InstallationActor
from ghbot.errors import UsageError

__all__ = ["EVENT_PERMISSIONS", "Registration", "manifest_for", "write_env"]

#: The permission an App needs to receive each event (GitHub's "Availability" lists).
EVENT_PERMISSIONS: Final[Mapping[str, str]] = {
    "branch_protection_configuration": "administration",
    "branch_protection_rule": "administration",
    "check_run": "checks",
    "check_suite": "checks",
    "code_scanning_alert": "security_events",
    "commit_comment": "contents",
    "create": "contents",
    "delete": "contents",
    "dependabot_alert": "vulnerability_alerts",
    "deploy_key": "administration",
    "deployment": "deployments",
    "deployment_status": "deployments",
    "discussion": "discussions",
    "discussion_comment": "discussions",
    "fork": "contents",
    "gollum": "contents",
    "issue_comment": "issues",
    "issues": "issues",
    "label": "metadata",
    "member": "members",
    "merge_group": "merge_queues",
    "milestone": "issues",
    "page_build": "pages",
    "public": "metadata",
    "pull_request": "pull_requests",
    "pull_request_review": "pull_requests",
    "pull_request_review_comment": "pull_requests",
    "pull_request_review_thread": "pull_requests",
    "push": "contents",
    "release": "contents",
    "repository": "metadata",
    "repository_dispatch": "contents",
    "secret_scanning_alert": "secret_scanning_alerts",
    "star": "metadata",
    "status": "statuses",
    "sub_issues": "issues",
    "watch": "metadata",
    "workflow_dispatch": "actions",
    "workflow_job": "actions",
    "workflow_run": "actions",
}
#: Events every App gets without subscribing (and may not list in a manifest).
ALWAYS_SENT: Final = frozenset(
    {"installation", "installation_repositories", "installation_target", "meta", "ping"}
)
_LEVELS: Final = {"read": 1, "write": 2, "admin": 3}


def manifest_for(
    bot: type[InstallationActor],
    *,
    name: str,
    webhook_url: str,
    redirect_url: str,
    homepage: str = "https://github.com",
    public: bool = False,
) -> dict[str, Any]:
    """Return the App manifest of `bot`: its handlers' events and the permissions they need.

    Raises `UsageError` for a permission level other than read, write or admin.
    """
    events = sorted({key.partition(".")[0] for key in bot._routes if key != "*"} - ALWAYS_SENT)
    permissions = {EVENT_PERMISSIONS[e]: "read" for e in events if e in EVENT_PERMISSIONS}
    for permission, level in bot.permissions.items():
        if level not in _LEVELS:
            raise UsageError(
                f"{bot.__name__}.permissions[{permission!r}]: {level!r} is not read, write or admin"
            )
        if _LEVELS[level] > _LEVELS.get(permissions.get(permission, ""), 0):
            permissions[permission] = level
    return {
        "name": name,
        "url": homepage,
        "hook_attributes": {"url": webhook_url, "active": True},
        "redirect_url": redirect_url,
        "public": public,
        "default_permissions": dict(sorted(permissions.items())),
        "default_events": events,
    }


def write_env(env_file: Path, values: Mapping[str, str]) -> None:
    """Set `values` in `env_file` (replacing those keys' lines, keeping the rest), mode 0600."""
    kept: list[str] = []
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            key = line.strip().removeprefix("export ").partition("=")[0].strip()
            if key not in values:
                kept.append(line)
    lines = [*kept, *(f"{key}={value}" for key, value in values.items())]
    _write_private(env_file, "\n".join(lines) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(text)


class Registration:
    """The local side of the manifest flow: a page, a callback, the files written."""

    def __init__(
        self,
        bot: type[InstallationActor],
        *,
        name: str,
        webhook_url: str,
        env_file: Path,
        web_url: str = "https://github.com",
        api_url: str = "https://api.github.com",
        org: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.bot, self.name, self.webhook_url = bot, name, webhook_url
        self.env_file = env_file
        self.web_url, self.api_url = web_url.rstrip("/"), api_url.rstrip("/")
        self.org = org
        self.host, self.port = host, port
        self.url = ""
        self._state = secrets.token_urlsafe(16)
        self._done: asyncio.Future[dict[str, Any]] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> Registration:
        """Serve the page; `url` is where the browser goes."""
        self._done = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/callback", self._callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}"
        return self

    async def wait(self) -> dict[str, Any]:
        """Return the App GitHub created (its ID, slug, ...; no secret) once written."""
        assert self._done is not None
        return await self._done

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def manifest(self) -> dict[str, Any]:
        return manifest_for(
            self.bot,
            name=self.name,
            webhook_url=self.webhook_url,
            redirect_url=f"{self.url}/callback",
        )

    async def _page(self, request: web.Request) -> web.Response:
        where = f"/organizations/{self.org}" if self.org else ""
        action = f"{self.web_url}{where}/settings/apps/new?state={self._state}"
        manifest = html.escape(json.dumps(self.manifest()), quote=True)
        page = (
            "<!doctype html><title>Register the GitHub App</title>"
            f'<form id="f" method="post" action="{html.escape(action, quote=True)}">'
            f'<input type="hidden" name="manifest" value="{manifest}">'
            "<p>This creates the GitHub App for your bot from its manifest.</p>"
            '<button type="submit">Create the App on GitHub</button></form>'
            "<script>document.getElementById('f').submit()</script>"
        )
        return web.Response(text=page, content_type="text/html")

    async def _callback(self, request: web.Request) -> web.Response:
        assert self._done is not None
        code, state = request.query.get("code"), request.query.get("state")
        if not code or state != self._state:
            return web.Response(status=400, text="This is not the answer to our request.")
        if self._done.done():
            return web.Response(status=409, text="The App is registered already.")
        url = f"{self.api_url}/app-manifests/{code}/conversions"
        headers = {"Accept": "application/vnd.github+json", "User-Agent": "ghbot-register"}
        async with aiohttp.ClientSession() as session, session.post(url, headers=headers) as got:
            data = await got.json(content_type=None)
            if got.status != 201 or not isinstance(data, dict):
                message = data.get("message") if isinstance(data, dict) else data
                self._done.set_exception(
                    UsageError(f"GitHub refused the manifest's code: {got.status} {message}")
                )
                return web.Response(status=502, text=f"GitHub answered {got.status}.")
        self._save(data)
        app = {k: v for k, v in data.items() if k not in _SECRETS}
        self._done.set_result(app)
        text = (
            f"The App {data.get('name')} (ID {data.get('id')}) is created; see {self.env_file}. "
            f"Install it on a repository: {data.get('html_url')}/installations/new"
        )
        return web.Response(text=text)

    def _save(self, data: Mapping[str, Any]) -> None:
        folder = self.env_file.parent
        key_file = folder / f"{data.get('slug') or 'app'}.private-key.pem"
        _write_private(key_file, str(data["pem"]))
        values = {
            "GITHUB_APP_ID": str(data["id"]),
            "GITHUB_PRIVATE_KEY": f"./{key_file.name}",
            "GITHUB_WEBHOOK_SECRET": str(data["webhook_secret"]),
        }
        if self.api_url != "https://api.github.com":  # GitHub Enterprise Server
            values["GITHUB_API_URL"] = self.api_url
        write_env(self.env_file, values)


_SECRETS: Final = frozenset({"pem", "webhook_secret", "client_secret"})
