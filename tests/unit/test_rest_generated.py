"""The committed `ghbot/rest/` is what `scripts/gen_rest.py` makes from the description.

The full description (13 MB) is not committed. `tests/fixtures/openapi-rest-subset.json`
is a subset of the same `@octokit/openapi` file, written by `gen_rest.py --subset`: a
few operations and every component they reach, unchanged. Regenerating from it must
give, class for class and method for method (compared by AST), what is committed;
the headers must name one source version and digest.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REST = ROOT / "ghbot" / "rest"
SUBSET = ROOT / "tests" / "fixtures" / "openapi-rest-subset.json"
HEADER = re.compile(
    r"from @octokit/openapi (\S+)\n\(generated/api\.github\.com\.json\)\. Do not edit\.\n"
    r"Source sha256: ([0-9a-f]{64})"
)


def _generated() -> list[Path]:
    return sorted(p for p in REST.rglob("*.py") if p.parent.name == "namespaces" or
                  p.name in ("models.py", "root.py"))  # fmt: skip


def _header(path: Path) -> tuple[str, str]:
    found = HEADER.search(path.read_text())
    assert found, f"{path} has no source header"
    return found.group(1), found.group(2)


def _nodes(path: Path) -> dict[str, str]:
    """Top-level classes and assignments, and methods (`Class.name`), as AST dumps."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            methods = [
                n for n in node.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)
            ]
            for item in methods:
                found[f"{node.name}.{item.name}"] = ast.dump(item)
            node.body = [n for n in node.body if n not in methods]  # a subset has fewer
            found[node.name] = ast.dump(node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.dump(node)
    return found


def test_every_generated_module_names_one_source() -> None:
    headers = {_header(path) for path in _generated()}
    assert len(headers) == 1
    version, _ = headers.pop()
    assert version == json.loads(SUBSET.read_text())["info"]["version"]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rest")
    _, digest = _header(REST / "models.py")
    script = ROOT / "scripts" / "gen_rest.py"
    command = [sys.executable, str(script), str(SUBSET), "--output", str(out), "--digest", digest]
    subprocess.run(command, check=True, cwd=ROOT)
    return out


def test_regenerating_from_the_subset_gives_the_committed_code(regenerated: Path) -> None:
    compared = 0
    for made in sorted(regenerated.rglob("*.py")):
        if made.name in ("__init__.py", "root.py"):
            continue
        committed = _nodes(REST / made.relative_to(regenerated))
        for name, dump in _nodes(made).items():
            assert name in committed, f"{made.name}: {name} is not committed"
            assert dump == committed[name], f"{made.name}: {name} differs from the committed one"
            compared += 1
    assert compared > 50


def test_the_root_lists_every_namespace_module() -> None:
    from ghbot.rest import NAMESPACES, Rest

    modules = {p.stem for p in (REST / "namespaces").glob("*.py")} - {"__init__"}
    assert set(NAMESPACES) == modules
    for name in NAMESPACES:
        assert isinstance(getattr(Rest, name), property)


def test_the_docs_give_the_generated_codes_size() -> None:
    """docs/rest.md's "Cost" figures: the structs in `ghbot.rest.models`, and the
    generated modules' size and lines, as the docs round them."""
    import msgspec

    models = importlib.import_module("ghbot.rest.models")
    structs = [
        v
        for v in vars(models).values()
        if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == models.__name__
    ]
    text = " ".join((ROOT / "docs" / "rest.md").read_text().split())
    said = re.search(r"\((\d+) structs\)", text)
    size = re.search(r"generated code is ([\d.]+) MB of source \(([\d,]+) lines\)", text)
    assert said and size
    assert int(said.group(1)) == len(structs)
    sources = [path.read_bytes() for path in _generated()]
    assert float(size.group(1)) == round(sum(map(len, sources)) / 1e6, 1)
    lines = sum(source.count(b"\n") for source in sources)
    assert int(size.group(2).replace(",", "")) == round(lines, -2)


def test_the_docs_count_the_operations_and_those_answered_as_plain_json() -> None:
    """docs/rest.md: how many operations in how many namespaces, and how many answer
    the decoded JSON (`Any`) rather than a struct."""
    from typing import Any

    from ghbot.rest import NAMESPACES
    from ghbot.rest.operation import Op

    ops = [
        op
        for namespace in NAMESPACES
        for op in vars(importlib.import_module(f"ghbot.rest.namespaces.{namespace}")).values()
        if isinstance(op, Op)
    ]
    text = " ".join((ROOT / "docs" / "rest.md").read_text().split())
    assert f"It covers {len(ops):,} operations in {len(NAMESPACES)} namespaces." in text
    untyped = sum(op.returns is Any for op in ops)
    assert f"a file or a directory listing; {untyped} operations in all)" in text


def test_the_docs_say_which_gets_page() -> None:
    """docs/rest.md: 274 paging GETs, 83 wrapping their items, and the six that take
    `per_page` and do not page, by name."""
    from ghbot.rest import NAMESPACES
    from ghbot.rest.operation import Op

    paging = wrapping = 0
    others: list[str] = []
    for namespace in NAMESPACES:
        module = importlib.import_module(f"ghbot.rest.namespaces.{namespace}")
        for name, op in vars(module).items():
            if isinstance(op, Op) and op.method == "GET" and "per_page" in op.in_query:
                if op.items is not None:
                    paging += 1
                    wrapping += op.key is not None
                else:
                    others.append(f"{namespace}.{name.strip('_').lower()}")
    text = " ".join((ROOT / "docs" / "rest.md").read_text().split())
    assert f"list of items ({paging} do; {wrapping} of them wrap" in text
    assert len(others) == 6 and "Six GETs take `per_page` and do not page" in text
    for name in others:
        assert f"`{name}`" in text, name


def test_importing_ghbot_and_the_client_loads_no_generated_module() -> None:
    code = (
        "import sys, ghbot, ghbot.client\n"
        "print(sorted(m for m in sys.modules if m.startswith('ghbot.rest')))\n"
        "from ghbot.client import GitHub\n"
        "GitHub(token='t').rest\n"
        "print(sorted(m for m in sys.modules if m.startswith('ghbot.rest.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert out.split("\n")[:2] == ["[]", "['ghbot.rest.operation', 'ghbot.rest.root']"]


def test_a_namespace_is_imported_on_first_use() -> None:
    code = (
        "import sys\nfrom ghbot.client import GitHub\n"
        "gh = GitHub(token='t')\ngh.rest.checks\n"
        "print(sorted(m for m in sys.modules if m.startswith('ghbot.rest.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    assert out.strip() == str(
        ["ghbot.rest.models", "ghbot.rest.namespaces", "ghbot.rest.namespaces.checks",
         "ghbot.rest.operation", "ghbot.rest.root"]
    )  # fmt: skip
    assert importlib.import_module("ghbot.rest.namespaces.checks").ChecksApi
