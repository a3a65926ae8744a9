"""What `mypy --strict` says about code using `GitHub.rest` (tests/unit/typed_rest.py,
and docs/rest.md's first block)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs import python_blocks

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


def rest_page_block() -> str:
    """docs/rest.md's first block as a module: its imports at the top, the rest the body
    of a handler's function, with `gh` and `event` as a bot has them."""
    block = python_blocks("docs/rest.md")[0]
    lines = block.splitlines()
    imports = [line for line in lines if line.startswith(("from ", "import "))]
    body = [line for line in lines if line not in imports]
    return (
        "from ghbot.client import GitHub\n"
        "from ghbot.events import Event\n"
        "from ghbot.models import IssuesOpened\n"
        + "\n".join(imports)
        + "\n\n\nasync def handler(gh: GitHub, event: Event[IssuesOpened]) -> None:\n"
        + "\n".join(f"    {line}" if line else "" for line in body)
        + "\n"
    )


def test_the_rest_pages_first_block_type_checks_strictly(tmp_path: Path) -> None:
    source = rest_page_block()
    assert "gh.rest.issues.create_comment(" in source and "gh.rest.paginate(" in source
    assert "getattr" not in source and "cast(" not in source
    page = tmp_path / "rest_page.py"
    page.write_text(source)
    assert mypy(page) == []
    # Checked indeed: the same block with a field the answer lacks is an error.
    wrong = tmp_path / "rest_page_wrong.py"
    wrong.write_text(source.replace("issue.title", "issue.no_such_field"))
    assert 'has no attribute "no_such_field"' in "\n".join(mypy(wrong))
