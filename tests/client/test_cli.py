"""`ghbot fake-github`: the subcommand registry, one-line errors, and a running server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ghbot import cli
from ghbot.auth import AppAuth
from ghbot.client import ClientOptions, GitHubApp, close_pool
from ghbot.errors import UsageError


def test_fake_github_is_a_registered_subcommand() -> None:
    assert "fake-github" in cli._COMMANDS
    help_text = cli.build_parser().format_help()
    assert "fake-github" in help_text
    with pytest.raises(UsageError, match="exists already"):
        cli.register(cli._COMMANDS["fake-github"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fake-github", "--public-key", "/no/such/key.pem"], "No such file"),
        (["fake-github", "--installation", "one=octo"], "expected ID=OWNER/REPO"),
    ],
)
def test_errors_print_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ghbot: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_file_that_is_no_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    assert cli.main(["fake-github", "--public-key", str(junk)]) == 2
    assert "is not a PEM public or private key" in capsys.readouterr().err


def test_fake_github_serves_until_stopped(tmp_path: Path, pem_pkcs8: bytes) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(pem_pkcs8)  # a private key works: the public half is derived
    command = [sys.executable, "-m", "ghbot.cli", "fake-github", "--port", "0"]
    command += ["--public-key", str(key), "--installation", "3=octo-org/hello-world,other"]
    command += ["--print-tokens"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            token = process.stdout.readline().split()[-1]
            assert url.startswith("http://127.0.0.1:") and token.startswith("ghs_")
            request = urllib.request.Request(  # noqa: S310 - a local URL
                f"{url}/installation/repositories", headers={"Authorization": f"token {token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
                names = [r["full_name"] for r in json.load(answer)["repositories"]]
            assert names == ["octo-org/hello-world", "octo-org/other"]
        finally:
            process.terminate()


def test_token_lifetime_and_latency_reach_the_running_fake(
    tmp_path: Path, pem_pkcs8: bytes
) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(pem_pkcs8)
    command = [sys.executable, "-m", "ghbot.cli", "fake-github", "--port", "0"]
    command += ["--public-key", str(key), "--installation", "3=octo-org/hello-world"]
    command += ["--token-lifetime", "400", "--latency", "0.3"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]

            async def exchange() -> tuple[float, float]:
                app = GitHubApp(AppAuth(1, pem_pkcs8), options=ClientOptions(base_url=url))
                started = time.monotonic()
                token = await app.create_installation_token(3)
                took = time.monotonic() - started
                await close_pool()
                return token.expires_at - time.time(), took

            lifetime, took = asyncio.run(exchange())
            assert 390 < lifetime <= 400
            assert took >= 0.3
        finally:
            process.terminate()


@pytest.mark.parametrize(
    "argv",
    [
        ["fake-github", "--token-lifetime", "0"],
        ["fake-github", "--token-lifetime", "soon"],
        ["fake-github", "--latency", "-1"],
        ["fake-github", "--latency", "nan"],
    ],
)
def test_a_lifetime_or_latency_that_is_no_duration_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "number of seconds" in err and "Traceback" not in err
