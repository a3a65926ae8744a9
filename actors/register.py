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
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from actors.bot import InstallationActor
from actors.schedule import SCHEDULE_EVENT
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
    "deployment_protection_rule": "deployments",
    "deployment_review": "deployments",
    "issue_dependencies": "issues",
    "membership": "members",
    "merge_group": "merge_queues",
    "organization": "members",
    "package": "packages",
    "personal_access_token_request": "organization_personal_access_token_requests",
    "project": "repository_projects",
    "project_card": "repository_projects",
    "project_column": "repository_projects",
    "projects_v2": "organization_projects",
    "projects_v2_item": "organization_projects",
    "projects_v2_status_update": "organization_projects",
    "registry_package": "packages",
    "repository_advisory": "repository_advisories",
    "repository_ruleset": "administration",
    "repository_vulnerability_alert": "vulnerability_alerts",
    "security_and_analysis": "administration",
    "team": "members",
    "team_add": "members",
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
    named = {key.partition(".")[0] for key in bot._routes if key != "*"}
    events = sorted(named - ALWAYS_SENT - {SCHEDULE_EVENT})  # a schedule is no webhook
    unmapped = [e for e in events if e not in EVENT_PERMISSIONS]
    if unmapped:
        raise UsageError(
            f"{bot.__name__}: no App permission is known for the events {unmapped}; "
            "register the App by hand on GitHub's settings page, or tell us"
        )
    permissions = {EVENT_PERMISSIONS[e]: "read" for e in events}
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
    """Set `values` in `env_file` (replacing those keys' lines, keeping the rest), mode 0600.

    A symbolic link stays one: the file it points to is written.
    """
    if env_file.is_symlink():
        env_file = env_file.resolve()
    kept: list[str] = []
    if env_file.exists():
        for line in env_file.read_text(encoding="utf-8").splitlines():
            key = line.strip().removeprefix("export ").partition("=")[0].strip()
            if key not in values:
                kept.append(line)
    lines = [*kept, *(f"{key}={_quoted(value)}" for key, value in values.items())]
    _write_private(env_file, "\n".join(lines) + "\n")


#: What a shell and a dotenv reader both take as it is, unquoted.
_PLAIN: Final = re.compile(r"[\w./:@%+,=-]*")


def _quoted(value: str) -> str:
    """`value` as a `.env` line writes it: as it is when plain, else quoted so that a
    shell (`set -a && . ./.env`) and ghbot's reader (`load_env_file`) both read it back
    unchanged (a private key's path with a space, say). Raises `UsageError` for a value
    no quoting keeps whole for both (one with `'` and a `"`, `$`, backquote or `\\`)."""
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"
    if not any(c in value for c in '"$`\\'):
        return f'"{value}"'
    raise UsageError("a value for .env has quotes a shell and a dotenv file read differently")


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable and writable by its owner only, all or nothing.

    Written to a new file beside it (mode 0600 from its creation), then renamed over.
    """
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def check_writable(env_file: Path) -> None:
    """Raise `UsageError` unless `env_file` and a private key beside it can be written.

    Checked before the App exists: GitHub hands its private key and webhook secret over
    once, and a flow that fails to write them leaves an App nobody holds the key of.
    """
    folder = env_file.resolve().parent  # both go beside the file a link points to
    if not folder.is_dir():
        raise UsageError(f"{env_file}: the folder {folder} does not exist")
    if env_file.exists():
        try:
            env_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{env_file} is not UTF-8 text") from None
        except OSError as exc:
            raise UsageError(f"{env_file} cannot be read: {exc.strerror}") from None
    probe = folder / f".ghbot-register.{secrets.token_hex(4)}.tmp"
    try:
        _write_private(probe, "")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"cannot write the App's settings in {folder}: {exc.strerror}") from None


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
        self._claimed = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> Registration:
        """Serve the page; `url` is where the browser goes. Raises `UsageError` when
        the settings could not be written (`check_writable`), before any App exists."""
        check_writable(self.env_file)
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

    def _owner(self) -> str:
        """The path of the App's owner's settings on GitHub's site: the user's or `org`'s."""
        return f"/organizations/{self.org}" if self.org else ""

    async def _page(self, request: web.Request) -> web.Response:
        action = f"{self.web_url}{self._owner()}/settings/apps/new?state={self._state}"
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
        if self._claimed:  # a second submission of the form: the first one decides
            return web.Response(status=409, text="The App is being registered already.")
        self._claimed = True
        try:
            data = await self._convert(code)
        except Exception as exc:
            problem = (
                exc
                if isinstance(exc, UsageError)
                else UsageError(f"the App's settings could not be fetched: {type(exc).__name__}")
            )
            self._done.set_exception(problem)
            return web.Response(status=502, text=f"{problem}")
        try:
            self._save(data)
        except Exception as exc:  # the App exists: say which, and how to get its key
            if isinstance(exc, UsageError):
                why = str(exc)
            elif isinstance(exc, OSError) and exc.strerror:
                why = exc.strerror
            else:
                why = type(exc).__name__
            slug = data.get("slug")
            settings = f"{self.web_url}{self._owner()}/settings/apps" + (f"/{slug}" if slug else "")
            problem = UsageError(
                f"the App {data.get('name')} (ID {data.get('id')}) is created, but its "
                f"settings could not be written to {self.env_file}: {why}; generate a "
                f"private key and set a webhook secret at {settings}, or delete the App there"
            )
            self._done.set_exception(problem)
            return web.Response(status=500, text=f"{problem}")
        app = {k: v for k, v in data.items() if k not in _SECRETS}
        self._done.set_result(app)
        text = (
            f"The App {data.get('name')} (ID {data.get('id')}) is created; see {self.env_file}. "
            f"Install it on a repository: {data.get('html_url')}/installations/new"
        )
        return web.Response(text=text)

    async def _convert(self, code: str) -> dict[str, Any]:
        """Exchange the one-time code for the App's settings (no authentication)."""
        url = f"{self.api_url}/app-manifests/{code}/conversions"
        headers = {"Accept": "application/vnd.github+json", "User-Agent": "ghbot-register"}
        timeout = aiohttp.ClientTimeout(total=60)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, headers=headers) as got,
        ):
            data = await got.json(content_type=None)
            status = got.status
        if status != 201 or not isinstance(data, dict):
            message = data.get("message") if isinstance(data, dict) else None
            raise UsageError(f"GitHub refused the manifest's code: {status} {message}")
        missing = [k for k in ("id", "pem", "webhook_secret") if not data.get(k)]
        if missing:
            raise UsageError(f"GitHub's answer lacks {', '.join(missing)}")
        return data

    def _save(self, data: Mapping[str, Any]) -> None:
        folder = self.env_file.resolve().parent
        slug = re.sub(r"[^a-z0-9-]+", "-", str(data.get("slug") or "app").lower()).strip("-")
        key_file = folder / f"{slug or 'app'}.private-key.pem"
        _write_private(key_file, str(data["pem"]))
        values = {
            "GITHUB_APP_ID": str(data["id"]),
            # Absolute: settings read it from wherever the bot is started.
            "GITHUB_PRIVATE_KEY": str(key_file),
            "GITHUB_WEBHOOK_SECRET": str(data["webhook_secret"]),
        }
        if self.api_url != "https://api.github.com":  # GitHub Enterprise Server
            values["GITHUB_API_URL"] = self.api_url
        write_env(self.env_file, values)


_SECRETS: Final = frozenset({"pem", "webhook_secret", "client_secret"})
