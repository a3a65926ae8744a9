"""`tests.net.ray_lock`, which the launcher and demo tests hold while their Ray takes
port 8000: a holder in another process makes the next one wait, and a release lets
it in."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import net

HOLD = """
import fcntl, sys, time
held = open(sys.argv[1], "a")
fcntl.flock(held, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`ray_lock`'s file, in the test's own directory."""
    path = tmp_path / "ray.lock"
    monkeypatch.setattr(net, "RAY_LOCK", path)
    return path


@pytest.fixture
def held_elsewhere(lock: Path) -> Iterator[Callable[[float], subprocess.Popen[str]]]:
    """Hold `lock` in another process for some seconds, as `flock FILE sleep N` does."""
    holders: list[subprocess.Popen[str]] = []

    def hold(seconds: float) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", HOLD, str(lock), str(seconds)]
        holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.communicate()


def test_a_lock_held_elsewhere_makes_the_next_holder_wait_until_it_is_released(
    lock: Path, held_elsewhere: Callable[[float], subprocess.Popen[str]]
) -> None:
    holder = held_elsewhere(1.0)
    started = time.monotonic()
    with net.ray_lock(timeout=30.0):
        waited = time.monotonic() - started
        assert holder.poll() is not None, "taken while the other process held it"
        with lock.open("a") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert waited > 0.5
    with lock.open("a") as other:  # released on leaving
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_lock_never_released_fails_the_test_after_its_timeout(
    held_elsewhere: Callable[[float], subprocess.Popen[str]],
) -> None:
    held_elsewhere(60.0)
    with pytest.raises(pytest.fail.Exception, match="still held"), net.ray_lock(timeout=0.1):
        raise AssertionError("taken while the other process held it")
