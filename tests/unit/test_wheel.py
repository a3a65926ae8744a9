"""ghbot installs from its wheel, not only from a checkout: package data, entry points, and
a new project's tests running against the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ghbot import __version__

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what git tracks: setuptools writes build/ beside the
    # sources, and a build/ left in the checkout would feed stale files to later builds.
    source = tmp_path_factory.mktemp("source")
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if name.startswith(("ghbot/", "actors/")) or name in ("pyproject.toml", "README.md"):
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, target)
    out = tmp_path_factory.mktemp("wheel")
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _succeeds([*argv, "-q", "-w", str(out), str(source)])
    [built] = out.glob("ghbot-*.whl")
    return built


def test_the_wheel_holds_the_code_its_data_and_its_entry_points(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    examples = [n for n in names if n.startswith("ghbot/testing/examples/") and n.endswith(".json")]
    assert len(examples) == 62
    for needed in (
        "ghbot/py.typed",
        "actors/py.typed",
        "actors/testing.py",
        "actors/dev.py",
        "ghbot/rest/namespaces/issues.py",
        "ghbot/models/_generated.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "ghbot = ghbot.cli:main" in text and "ghbot = actors.pytest_plugin" in text


def test_a_new_project_passes_its_tests_against_the_installed_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
    # The wheel first on the path, run from elsewhere: the checkout is not what imports.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import ghbot, actors; print(ghbot.__file__, actors.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.count(str(site)) == 2, where.stdout
    new = [sys.executable, "-m", "ghbot.cli", "new", "wheel-bot", "--dir", str(tmp_path)]
    subprocess.run(new, cwd=tmp_path, env=env, check=True, capture_output=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path / "wheel-bot",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    # The project installs as a package (its own build, offline: no dependencies, the
    # build backend this environment's), asking for ghbot and a `dev` extra.
    project = tmp_path / "project-site"
    build = [*install[:4], "--no-index", "--no-deps", "--no-build-isolation"]
    _succeeds([*build, "--target", str(project), str(tmp_path / "wheel-bot")])
    [metadata] = project.glob("wheel_bot-*.dist-info/METADATA")
    fields = metadata.read_text().splitlines()
    required = [Requirement(f[15:]) for f in fields if f.startswith("Requires-Dist: ")]
    [wanted] = [r for r in required if r.name == "ghbot"]
    # This ghbot's version, pre-release and all, and not PyPI's other `ghbot`.
    assert wanted.marker is None and wanted.specifier.contains(__version__, prereleases=True)
    assert not wanted.specifier.contains("0.9.5"), wanted
    assert "Provides-Extra: dev" in fields
    assert (project / "wheel_bot" / "bot.py").is_file()


def test_a_new_project_refuses_the_other_ghbot_on_pypi(tmp_path: Path) -> None:
    """PyPI's `ghbot` (0.9.5) is another project. Where this ghbot is not installed,
    pip resolving the new project's requirement must stop, not install that one: here
    against a wheel of that name and version in place of PyPI (offline)."""
    other = tmp_path / "other"
    (other / "ghbot").mkdir(parents=True)
    (other / "ghbot" / "__init__.py").write_text("")
    (other / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "ghbot"\nversion = "0.9.5"\n'
    )
    index = tmp_path / "index"
    pip = [sys.executable, "-m", "pip"]
    offline = ["--no-index", "--no-build-isolation", "--disable-pip-version-check"]
    _succeeds([*pip, "wheel", "-q", *offline, "--no-deps", "-w", str(index), str(other)])
    assert [w.name for w in index.iterdir()] == ["ghbot-0.9.5-py3-none-any.whl"]
    subprocess.run(
        [sys.executable, "-m", "ghbot.cli", "new", "fresh-bot", "--dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    # As in a new environment: what is installed here (this ghbot) is ignored.
    resolve = [*pip, "install", "--dry-run", "--ignore-installed", *offline]
    done = subprocess.run(
        [*resolve, "--find-links", str(index), str(tmp_path / "fresh-bot")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    assert "No matching distribution found for ghbot" in done.stderr, done.stderr
    assert "ghbot-0.9.5" not in done.stdout


def _succeeds(argv: list[str]) -> None:
    """Run `argv` (pip); fail the test with its output unless it succeeds."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
