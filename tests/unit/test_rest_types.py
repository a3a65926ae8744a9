"""What `mypy --strict` says about code using `GitHub.rest` (tests/unit/typed_rest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TYPED = Path(__file__).with_name("typed_rest.py")


def mypy(path: Path) -> list[str]:
    """Return mypy --strict's error lines about `path`."""
    binary = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if binary is None:
        pytest.skip("mypy is not installed")
    argv = [binary, "--strict", "--no-error-summary", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    # By file name: mypy's cache may report a module under the path it had before.
    return [line for line in done.stdout.splitlines() if line.split(":")[0].endswith(path.name)]


def test_typed_rest_calls_type_check_strictly() -> None:
    source = TYPED.read_text().split('"""', 2)[2]  # the code, not the docstring
    assert "getattr" not in source and "cast(" not in source
    assert mypy(TYPED.relative_to(ROOT)) == []


def test_mypy_catches_wrong_arguments_and_fields(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_rest.py"
    wrong.write_text(  # line 5: a str number, 6: no such state, 7: `get` does not page
        "from ghbot.client import GitHub\n\n\n"
        "async def f(gh: GitHub) -> object:\n"
        "    c = await gh.rest.issues.create_comment(owner='o', repo='r', issue_number='1',"
        " body='')\n"
        "    await gh.rest.issues.update(owner='o', repo='r', issue_number=1, state='shut')\n"
        "    gh.rest.paginate(gh.rest.issues.get, owner='o', repo='r', issue_number=1)\n"
        "    return c.title\n"
    )
    errors = "\n".join(mypy(wrong))
    assert 'wrong_rest.py:5: error: Argument "issue_number"' in errors
    assert 'wrong_rest.py:6: error: Argument "state"' in errors
    assert "wrong_rest.py:7: error: No overload variant" in errors
    assert 'wrong_rest.py:8: error: "IssueComment" has no attribute "title"' in errors
