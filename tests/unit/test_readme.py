"""The README's first sample: a bot that passes `mypy --strict` and registers its handler."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.docs import python_blocks

ROOT = Path(__file__).resolve().parents[2]


def first_sample() -> str:
    """Return the first Python block under the README's "Writing a bot"."""
    return python_blocks("README.md", after="## Writing a bot")[0]


def test_the_first_sample_passes_mypy_strict(tmp_path: Path) -> None:
    sample = tmp_path / "readme_bot.py"
    sample.write_text(first_sample())
    binary = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if binary is None:
        pytest.skip("mypy is not installed")
    argv = [binary, "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run([*argv, str(sample)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "getattr" not in sample.read_text() and "cast(" not in sample.read_text()


def test_the_first_sample_defines_a_bot_with_its_handler() -> None:
    namespace: dict[str, object] = {}
    exec(compile(first_sample(), "README.md", "exec"), namespace)  # noqa: S102 - our README
    bot = namespace["Greeter"]
    assert bot.handlers_for("issues.opened", "issues") == ("welcome",)  # type: ignore[attr-defined]


async def test_the_testing_sample_passes_against_the_first_samples_bot() -> None:
    """ "Testing a bot", run as written on the README's own `Greeter` (the harness, no Ray)."""
    namespace: dict[str, Any] = {}
    exec(compile(first_sample(), "README.md", "exec"), namespace)  # noqa: S102 - our README
    harness = python_blocks("README.md", after="## Testing a bot")[0]
    exec(compile(harness, "README.md", "exec"), namespace)  # noqa: S102 - our README
    await namespace["test_welcome"]()


def test_the_app_ghbot_register_makes_for_the_first_sample_may_comment_on_issues() -> None:
    """The README's `Greeter` declared no `permissions`: the manifest `ghbot register`
    built from its events asked for `issues: read`, and in production its
    `create_comment` answered 403."""
    from actors.register import manifest_for

    namespace: dict[str, Any] = {}
    exec(compile(first_sample(), "README.md", "exec"), namespace)  # noqa: S102 - our README
    manifest = manifest_for(
        namespace["Greeter"], name="Greeter", webhook_url="https://x", redirect_url="https://y"
    )
    assert manifest["default_permissions"] == {"issues": "write"}
    assert manifest["default_events"] == ["issues"]
