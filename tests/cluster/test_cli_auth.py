"""The CLI reaches a cluster started with Ray's token authentication on, as `serve run` does.

A Ray head of this module's own runs beside the session's: `ray start --head --block`
with RAY_AUTH_MODE=token, its token in a HOME of its own and its files under a
RAY_TMPDIR of its own, so nothing of the session's Ray (or the user's ~/.ray) is read
or changed. A stand-in shard actor named like a deployment's answers the commands.
`ghbot` then runs as a user would run it, in a subprocess with that HOME and without
RAY_AUTH_MODE: by address, and by Ray's discovery (`auto` reads the address `ray start`
recorded under RAY_TMPDIR). The head stops on SIGTERM to its `ray start --block`, which
stops the processes it started; any left over are found by the module's directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.conftest import ROOT, free_port

NAMESPACE = "auth-test"
BIN = Path(sys.executable).parent

# A driver that joins the head with its token and leaves a detached stand-in for shard 0.
STAND_IN = """
import ray
ray.init(address=ADDRESS, namespace=NAMESPACE, log_to_driver=False)

@ray.remote(num_cpus=0)
class Shard:
    def stats(self):
        return {"index": 0, "received": 7}

    def dead_letters(self):
        return []

shard = Shard.options(name="ghbot-shard-0", lifetime="detached").remote()
assert ray.get(shard.stats.remote())["received"] == 7
"""


@dataclass(frozen=True)
class Head:
    address: str
    base: Path  # RAY_TMPDIR: the head's files, and `ray_current_cluster` for `auto`
    home: Path  # HOME: ~/.ray/auth_token, as `serve run` leaves it


def clean_env(**changes: str) -> dict[str, str]:
    """This process's environment without Ray's auth and address settings, plus `changes`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **changes}


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    base = Path(tempfile.mkdtemp(prefix="ghbot-auth-", dir="/tmp"))  # short: Ray's sockets
    home = base / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = clean_env(HOME=str(home), RAY_TMPDIR=str(base), RAY_AUTH_MODE="token")
    # On SIGTERM, `ray start --block` first drains the node for Serve, up to 30 s by
    # default; this head runs no Serve, so it stops at once.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    command = [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}"]
    command += ["--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats"]
    log = (base / "head.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(base / "ray" / "ray_current_cluster", process)
        stand_in = STAND_IN.replace("ADDRESS", repr(address)).replace("NAMESPACE", repr(NAMESPACE))
        subprocess.run([sys.executable, "-c", stand_in], env=env, check=True, timeout=120)
        yield Head(address, base, home)
    finally:
        _stop(process, base)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _wait_for(recorded: Path, process: subprocess.Popen[bytes], within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while not recorded.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the token-auth Ray head did not start: see {recorded.parent}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes], base: Path) -> None:
    """Stop the head by its own `ray start`; then any process still running from `base`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    deadline = time.monotonic() + 10
    while _started_from(base) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _started_from(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _started_from(base: Path) -> list[int]:
    """Return the processes whose command line names `base` (Linux's /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if str(base).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


def ghbot(*argv: str, **env: str) -> tuple[int, str, str, float]:
    """Run the `ghbot` command line; return its exit code, stdout, stderr and seconds."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ghbot.cli", *argv],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_the_commands_reach_it_by_address_with_no_setting(head: Head) -> None:
    for argv in (["status", "--json"], ["dead-letters", "list", "--json"]):
        code, out, err, _ = ghbot(
            *argv, "--address", head.address, "--namespace", NAMESPACE, HOME=str(head.home)
        )
        assert code == 0, err
        assert json.loads(out) == ([{"index": 0, "received": 7}] if argv[0] == "status" else [])


def test_the_commands_find_it_as_ray_does(head: Head) -> None:
    code, out, err, _ = ghbot(
        "status", "--json", "--namespace", NAMESPACE, HOME=str(head.home), RAY_TMPDIR=str(head.base)
    )
    assert code == 0, err
    assert json.loads(out) == [{"index": 0, "received": 7}]


def test_without_its_token_the_cli_says_what_to_do_at_once(head: Head, tmp_path: Path) -> None:
    code, out, err, took = ghbot("status", "--address", head.address, HOME=str(tmp_path))
    assert (code, out) == (2, "")
    assert err == (
        f"ghbot: error: the Ray cluster at {head.address} requires Ray's authentication token "
        "and none was found here: run ghbot as the user who started the cluster, or set "
        "RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` prints it, as the user "
        "who started the cluster, on its head)\n"
    )
    assert took < 15  # no twenty seconds of Ray's retries


def test_a_wrong_token_or_auth_turned_off_says_what_to_do(head: Head, tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    code, _, err, took = ghbot("status", "--address", head.address, HOME=str(tmp_path))
    assert code == 2 and took < 15
    assert err.startswith(
        f"ghbot: error: the Ray cluster at {head.address} refused the Ray token found here"
    )
    assert err.count("\n") == 1 and "RAY_AUTH_TOKEN to the cluster's token" in err
    code, _, err, _ = ghbot(
        "status", "--address", head.address, HOME=str(head.home), RAY_AUTH_MODE="disabled"
    )
    assert code == 2
    assert err == (
        f"ghbot: error: the Ray cluster at {head.address} requires Ray's authentication "
        "token, and RAY_AUTH_MODE=disabled here: unset RAY_AUTH_MODE\n"
    )
