"""`ghbot register`: the manifest flow end to end against FakeGitHub, a browser simulated."""

from __future__ import annotations

import asyncio
import html
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors import InstallationActor, every, on
from actors.dev import load_env_file
from actors.register import Registration, manifest_for, write_env
from examples.greeter import Greeter
from ghbot import cli
from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp, close_pool
from ghbot.config import Settings
from ghbot.errors import Unauthorized, UsageError
from ghbot.events import Event
from ghbot.testing import FakeGitHub, app_key_pair


async def browse(page_url: str) -> tuple[int, str]:
    """Do what the browser does: load the page, submit its form, follow GitHub's redirect."""
    async with aiohttp.ClientSession() as browser:
        page = await (await browser.get(page_url)).text()
        action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
        manifest = html.unescape(re.search(r'name="manifest" value="([^"]*)"', page).group(1))  # type: ignore[union-attr]
        created = await browser.post(action, data={"manifest": manifest}, allow_redirects=False)
        assert created.status == 302, await created.text()
        back = await browser.get(created.headers["Location"])
        return back.status, await back.text()


async def test_the_app_is_created_and_its_secrets_written(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=DEBUG\nGITHUB_APP_ID=9\n")
    old_key, public = app_key_pair()
    async with FakeGitHub(app_id=77, public_key_pem=public) as fake:
        before = GitHubApp(AppAuth(77, old_key), options=ClientOptions(base_url=fake.url))
        assert (await before.gh.request("GET", "/app")).status == 200  # its JWT now known
        flow = await Registration(
            Greeter,
            name="Greeter Bot",
            webhook_url="https://bots.example.com/webhooks",
            env_file=env_file,
            web_url=fake.url,
            api_url=fake.url,
        ).start()
        try:
            status, text = await browse(f"{flow.url}/")
            app = await flow.wait()
        finally:
            await flow.close()
        assert status == 200 and "Greeter Bot" in text and "(ID 77)" in text
        assert "https://github.com/apps/greeter-bot/installations/new" in text
        assert app["id"] == 77 and app["slug"] == "greeter-bot"
        assert not {"pem", "webhook_secret", "client_secret"} & app.keys()

        [manifest] = fake.manifest_flow.manifests
        assert manifest["default_events"] == ["issues", "pull_request"]
        assert manifest["default_permissions"] == {"issues": "write", "pull_requests": "write"}
        assert manifest["hook_attributes"] == {
            "url": "https://bots.example.com/webhooks",
            "active": True,
        }

        # .env: the old app ID replaced, other lines kept, owner-only.
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        values = load_env_file(env_file, {})
        assert values["LOG_LEVEL"] == "DEBUG" and values["GITHUB_APP_ID"] == "77"
        key = tmp_path / "greeter-bot.private-key.pem"
        assert values["GITHUB_PRIVATE_KEY"] == str(key)  # absolute: found from anywhere
        assert values["GITHUB_API_URL"] == fake.url and len(values["GITHUB_WEBHOOK_SECRET"]) > 20
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

        # The credentials work: the app's JWT, signed with the new key, is accepted.
        gh = GitHubApp.from_settings(Settings.from_env(values))
        answer = await gh.gh.request("GET", "/app")
        assert answer.status == 200 and answer.data["id"] == 77
        # The App's earlier key is no longer its own: even its JWT the fake had seen.
        with pytest.raises(Unauthorized):
            await before.gh.request("GET", "/app")
        await close_pool()


async def test_an_organization_s_app_is_created_under_the_organization(tmp_path: Path) -> None:
    # `--org ORG`: the form goes to the organization's settings, and the App it owns.
    async with FakeGitHub(app_id=78) as fake:
        flow = await Registration(
            Greeter,
            name="Org Bot",
            webhook_url="https://bots.example.com/webhooks",
            env_file=tmp_path / ".env",
            web_url=fake.url,
            api_url=fake.url,
            org="acme",
        ).start()
        try:
            async with aiohttp.ClientSession() as browser:
                page = await (await browser.get(f"{flow.url}/")).text()
            status, _ = await browse(f"{flow.url}/")
            app = await flow.wait()
        finally:
            await flow.close()
    action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    assert action.startswith(f"{fake.url}/organizations/acme/settings/apps/new?state=")
    assert status == 200 and app["owner"]["login"] == "acme"


async def test_a_callback_with_the_wrong_state_writes_nothing(tmp_path: Path) -> None:
    async with FakeGitHub(app_id=77) as fake:
        flow = await Registration(
            Greeter,
            name="x",
            webhook_url="https://h/webhooks",
            env_file=tmp_path / ".env",
            web_url=fake.url,
            api_url=fake.url,
        ).start()
        try:
            async with aiohttp.ClientSession() as browser:
                got = await browser.get(f"{flow.url}/callback?code=abc&state=forged")
                assert got.status == 400
                got = await browser.get(f"{flow.url}/callback?code=abc&state={flow._state}")
                assert got.status == 502  # an unknown code: GitHub answers 404
            with pytest.raises(UsageError, match="refused the manifest's code: 404"):
                await flow.wait()
        finally:
            await flow.close()
    assert not (tmp_path / ".env").exists()


class Everything(InstallationActor):
    permissions = {"issues": "read", "contents": "write"}

    @on("*")
    async def any(self, event: Event) -> None:
        return None

    @on("installation.created", "issue_comment.created", "push")
    async def some(self, event: Event) -> None:
        return None


def test_the_manifest_asks_read_for_each_event_and_what_the_bot_declares() -> None:
    manifest = manifest_for(Everything, name="n", webhook_url="w", redirect_url="r")
    # "*" names no event; installation events come without subscribing.
    assert manifest["default_events"] == ["issue_comment", "push"]
    assert manifest["default_permissions"] == {"contents": "write", "issues": "read"}

    class Wrong(Everything):
        permissions = {"issues": "all"}

    with pytest.raises(UsageError, match="'all' is not read, write or admin"):
        manifest_for(Wrong, name="n", webhook_url="w", redirect_url="r")


def test_the_command_prints_the_page_and_writes_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeGitHub.start_in_thread(app_id=78)
    try:
        env_file = tmp_path / ".env"
        argv = ["register", "--bot", "examples.greeter:Greeter", "--name", "Cmd Bot"]
        argv += ["--webhook-url", "https://h/webhooks", "--env-file", str(env_file)]
        argv += ["--github-url", fake.url, "--api-url", fake.url, "--no-browser"]
        result: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: result.update(code=cli.main(argv)))
        runner.start()
        deadline = time.monotonic() + 30
        page, printed = None, ""
        while page is None and time.monotonic() < deadline:
            printed += capsys.readouterr().out
            page = re.search(r"open (http://\S+/) in a browser", printed)
            time.sleep(0.1)
        assert page is not None
        status, _ = asyncio.run(browse(page.group(1)))
        runner.join(30)
        assert status == 200 and result == {"code": 0}
        env = load_env_file(env_file, {})
        assert env["GITHUB_APP_ID"] == "78"
        # Nothing secret on the terminal: not the webhook secret, not the key.
        both = capsys.readouterr()
        printed += both.out + both.err
        assert env["GITHUB_WEBHOOK_SECRET"] not in printed
        assert "PRIVATE KEY" not in printed and "wrote" in printed
    finally:
        fake.stop()


async def test_a_failed_exchange_ends_the_wait_with_one_line(tmp_path: Path) -> None:
    flow = await Registration(
        Greeter,
        name="x",
        webhook_url="https://h/webhooks",
        env_file=tmp_path / ".env",
        web_url="http://127.0.0.1:1",
        api_url="http://127.0.0.1:1",  # nothing listens: the exchange cannot happen
    ).start()
    try:
        async with aiohttp.ClientSession() as browser:
            url = f"{flow.url}/callback?code=abc&state={flow._state}"
            assert (await browser.get(url)).status == 502
            assert (await browser.get(url)).status == 409  # the form sent again
        with pytest.raises(UsageError, match="could not be fetched: ClientConnectorError"):
            await asyncio.wait_for(flow.wait(), 10)
    finally:
        await flow.close()
    assert not (tmp_path / ".env").exists()


class Scheduled(InstallationActor):
    @every("1h")
    async def sweep(self, event: Event) -> None:
        return None

    @on("issues.opened")
    async def seen(self, event: Event) -> None:
        return None


class Sponsored(InstallationActor):
    @on("sponsorship.created")
    async def thanks(self, event: Event) -> None:
        return None


def test_schedules_are_no_events_and_an_unknown_permission_is_said() -> None:
    manifest = manifest_for(Scheduled, name="n", webhook_url="w", redirect_url="r")
    assert manifest["default_events"] == ["issues"]
    with pytest.raises(
        UsageError, match=r"no App permission is known for the events \['sponsorship'\]"
    ):
        manifest_for(Sponsored, name="n", webhook_url="w", redirect_url="r")


def test_a_failed_write_leaves_env_as_it_was_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GHBOT_BOT=examples.greeter:Greeter\nGITHUB_APP_ID=1\n")

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # as actors.register calls it
    with pytest.raises(OSError, match="No space left"):
        write_env(env_file, {"GITHUB_APP_ID": "78", "GITHUB_WEBHOOK_SECRET": "s3cret"})
    assert env_file.read_text() == "GHBOT_BOT=examples.greeter:Greeter\nGITHUB_APP_ID=1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]  # the partial removed


@pytest.mark.parametrize(
    "path", ["/home/me/My Bots/app.private-key.pem", "/tmp/it's/key.pem", "/plain/key.pem"]
)
def test_env_values_read_back_the_same_in_a_shell_and_in_ghbot(tmp_path: Path, path: str) -> None:
    """The generated README loads `.env` with `set -a && . ./.env`: a key's path with a
    space (common on macOS) broke it, and ghbot dev reads the same file."""
    env_file = tmp_path / ".env"
    write_env(env_file, {"GITHUB_APP_ID": "78", "GITHUB_PRIVATE_KEY": path})
    shell = subprocess.run(
        ["sh", "-c", 'set -a && . ./.env && set +a && printf %s "$GITHUB_PRIVATE_KEY"'],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == path
    assert load_env_file(env_file, {}) == {"GITHUB_APP_ID": "78", "GITHUB_PRIVATE_KEY": path}
    with pytest.raises(UsageError, match="quotes"):
        write_env(env_file, {"GITHUB_WEBHOOK_SECRET": "it's $x"})


@pytest.mark.parametrize("where", ["no such folder", "not UTF-8"])
def test_settings_that_cannot_be_written_are_refused_before_the_app_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """GitHub hands the new App's key and secret over once: a `.env` that could not be
    written is refused before the page opens, with one line and no traceback."""
    env_file = tmp_path / "conf" / ".env"
    if where == "not UTF-8":
        env_file.parent.mkdir()
        env_file.write_bytes(b"GITHUB_APP_ID=\xff\n")
    argv = ["register", "--bot", "examples.greeter:Greeter", "--name", "Cmd Bot"]
    argv += ["--webhook-url", "https://h/webhooks", "--env-file", str(env_file)]
    argv += ["--github-url", "http://127.0.0.1:1", "--api-url", "http://127.0.0.1:1"]
    assert cli.main([*argv, "--no-browser"]) == 2
    err = capsys.readouterr()
    assert "in a browser" not in err.out and "Traceback" not in err.err
    reason = "does not exist" if where == "no such folder" else "is not UTF-8 text"
    assert f"{env_file}" in err.err and reason in err.err


async def test_settings_the_flow_fails_to_write_name_the_app_that_exists(tmp_path: Path) -> None:
    """Writing failed after GitHub created the App (here, the key's name is taken by a
    folder): the error says which App it is and where to get a key for it."""
    (tmp_path / "greeter-bot.private-key.pem").mkdir()
    async with FakeGitHub(app_id=77) as fake:
        flow = await Registration(
            Greeter,
            name="Greeter Bot",
            webhook_url="https://h/webhooks",
            env_file=tmp_path / ".env",
            web_url=fake.url,
            api_url=fake.url,
            org="acme",
        ).start()
        try:
            status, text = await browse(f"{flow.url}/")
            with pytest.raises(UsageError) as failed:
                await flow.wait()
        finally:
            await flow.close()
    settings = f"{fake.url}/organizations/acme/settings/apps/greeter-bot"
    assert status == 500 and "(ID 77) is created" in text and settings in text
    assert str(failed.value) == text and "Is a directory" in text
    assert not (tmp_path / ".env").exists()


def test_a_linked_env_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    """A `.env` kept elsewhere (a secrets folder) and linked into the project."""
    (tmp_path / "secrets").mkdir()
    target = tmp_path / "secrets" / "bot.env"
    target.write_text("GHBOT_BOT=examples.greeter:Greeter\n")
    link = tmp_path / ".env"
    link.symlink_to(target)
    write_env(link, {"GITHUB_APP_ID": "78"})
    assert link.is_symlink()
    assert target.read_text() == "GHBOT_BOT=examples.greeter:Greeter\nGITHUB_APP_ID=78\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
