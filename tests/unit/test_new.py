"""`ghbot new NAME`: a project whose own tests pass at once, without Ray, and type-check."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ghbot import cli

ROOT = Path(__file__).resolve().parents[2]


def test_the_new_project_passes_its_own_tests_without_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["new", "my-bot", "--dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "created" in printed
    # The next step installs into this interpreter's environment, which holds ghbot: a
    # new one would find only PyPI's `ghbot`, another project.
    assert f"{shlex.quote(sys.executable)} -m pip install -e '.[dev]'" in printed
    assert "venv" not in printed.replace(sys.executable, "")
    project = tmp_path / "my-bot"
    names = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert names == {
        "pyproject.toml",
        "README.md",
        ".env.example",
        ".gitignore",
        "my_bot/__init__.py",
        "my_bot/bot.py",
        "tests/__init__.py",
        "tests/test_bot.py",
    }
    # The project's tests, in a fresh interpreter, with a check that Ray never loads.
    guard = project / "conftest.py"
    guard.write_text(
        "import sys\n\n\ndef pytest_sessionfinish(session, exitstatus):\n"
        "    assert 'ray' not in sys.modules, 'the tests imported Ray'\n"
    )
    assert "2 passed" in _project_tests(project)


@pytest.mark.parametrize("name", ["welcomed", "event"])
def test_a_project_named_like_what_its_bot_uses_passes_its_tests(tmp_path: Path, name: str) -> None:
    """`Welcomed` (the bot's event) and `Event` are names the bot module uses: the bot
    class takes a `Bot` suffix instead of hiding them."""
    project = cli_new(tmp_path, name)
    assert (
        f"class {name.capitalize()}Bot(InstallationActor)"
        in (project / name / "bot.py").read_text()
    )
    _project_tests(project)


def _project_tests(project: Path) -> str:
    """Run the project's own tests in a fresh interpreter; assert they pass; their output."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_bare_mypy_in_the_new_project_checks_its_bot_and_tests_strictly(
    tmp_path: Path,
) -> None:
    """The project's `[tool.mypy]` had `strict = true` and no `files`: `mypy`, as its
    README says to run it, exited 2 with "Missing target module, package, files, or
    command"."""
    binary = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if binary is None:
        pytest.skip("mypy is not installed")
    project = cli_new(tmp_path, "typed-bot")
    settings = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["mypy"]
    assert (settings["strict"], settings["files"]) == (True, ["typed_bot", "tests"])
    assert "\n   mypy\n" in (project / "README.md").read_text()
    # ghbot as its installed package shows it; no PYTHONPATH (a test run's) to find it by.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MYPYPATH": str(ROOT)}
    done = subprocess.run([binary], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues found in 4 source files" in done.stdout


def test_the_new_project_declares_what_its_bot_imports_and_ignores_its_build(
    tmp_path: Path,
) -> None:
    """The bot imports `msgspec`, which the project did not declare (it came only as
    ghbot's dependency); `pip install -e .` left `*.egg-info/`, which `.gitignore` did
    not name."""
    project = cli_new(tmp_path, "my-bot")
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"][
        "dependencies"
    ]
    declared = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0] for d in dependencies}
    code = (project / "my_bot" / "bot.py").read_text()
    imported = set(re.findall(r"^(?:import|from) (\w+)", code, re.MULTILINE))
    imported -= {"__future__", "actors", *sys.stdlib_module_names}  # `actors` is ghbot's
    assert imported == {"msgspec", "ghbot"}
    assert declared == imported
    ignored = (project / ".gitignore").read_text().splitlines()
    # What `pip install -e .`, `mypy` and `pytest`, as its README runs them, leave.
    assert {"*.egg-info/", ".mypy_cache/", ".pytest_cache/"} <= set(ignored)


def cli_new(parent: Path, name: str) -> Path:
    assert cli.main(["new", name, "--dir", str(parent)]) == 0
    return parent / name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("9lives", "cannot name a project"),
        ("my bot", "cannot name"),
        ("x-", "cannot name"),
        ("my--bot", "cannot name"),
        ("ghbot", "taken"),
        ("json", "taken"),
        ("msgspec", "an installed package"),  # the bot would import itself for msgspec
        ("ray", "an installed package"),
    ],
)
def test_a_name_that_cannot_be_a_package_is_refused(
    name: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["new", name, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ghbot: error: ") and message in err and err.count("\n") == 1


def test_nothing_is_written_over(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my-bot").mkdir()
    (tmp_path / "my-bot" / "keep.txt").write_text("mine")
    assert cli.main(["new", "my-bot", "--dir", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "my-bot").iterdir()] == ["keep.txt"]


def test_the_requirement_on_ghbot_keeps_to_its_release_series() -> None:
    from ghbot.scaffold import requirement

    assert requirement("0.1.0.dev0") == "ghbot>=0.1.0.dev0,<0.2"
    assert requirement("0.9.5") == "ghbot>=0.9.5,<0.10"
    assert requirement("1.2.0") == "ghbot>=1.2.0,<2"  # SemVer from 1.0: a major breaks
