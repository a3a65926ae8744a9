"""The layers: the SDK stands alone, and only the Ray edge imports Ray.

Checked twice: by importing (what a bot's imports load) and by reading every module's
imports from its source (module level and inside functions), so a Ray import on a path
no test happens to run is caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_importing_the_sdk_and_writing_a_bot_needs_no_ray() -> None:
    code = (
        "import sys\n"
        "import ghbot, ghbot.events, ghbot.webhooks, ghbot.auth, ghbot.client, ghbot.journal\n"
        "import ghbot.testing, ghbot.cli\n"
        "from actors import InstallationActor, on\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deploy_is_resolved_lazily() -> None:
    import ghbot

    assert callable(ghbot.deploy)


# --- the same line, read from the source (what is imported where, not what ran) -------

ROOT = Path(__file__).resolve().parents[2]
#: The Ray edge: the one package that imports Ray (the Serve ingress, the actors'
#: runtime, the deployment, the admin API and CLI commands for a running deployment,
#: the metrics bridge).
RAY_EDGE = "actors/ray/"
#: Where the SDK may import the actor framework, and only inside a function: the
#: `ghbot.deploy` hook that `serve run ghbot.deploy` needs.
SDK_TO_ACTORS = {"ghbot/__init__.py": {"actors.ray.deploy"}}


def imports(source: str) -> tuple[set[str], set[str]]:
    """Return the modules a source imports at module level and inside functions."""
    top: set[str] = set()
    lazy: set[str] = set()

    def visit(nodes: list[ast.stmt], into: set[str]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                into.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                into.add(node.module)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.Import):
                        lazy.update(alias.name for alias in inner.names)
                    elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                        lazy.add(inner.module)
            else:  # `if TYPE_CHECKING:`, `try:` ... at module level
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, ast.stmt)], into)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body, into)

    visit(ast.parse(source).body, top)
    return top, lazy


def _sources(package: str) -> dict[str, tuple[set[str], set[str]]]:
    return {
        path.relative_to(ROOT).as_posix(): imports(path.read_text())
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _under(modules: set[str], root: str) -> set[str]:
    return {m for m in modules if m == root or m.startswith(root + ".")}


def test_only_the_ray_edge_imports_ray() -> None:
    sources = {**_sources("actors"), **_sources("ghbot")}
    assert any(path.startswith(RAY_EDGE) for path in sources)
    for path, (top, lazy) in sources.items():
        if not path.startswith(RAY_EDGE):
            assert not _under(top | lazy, "ray"), f"{path} imports Ray"


def test_loading_the_edges_commands_imports_no_ray() -> None:
    """Every `ghbot` command loads `actors.ray.cli` (its commands plug in) and the
    `actors.ray.connection` it imports: they import Ray only inside the commands, as
    their package's `__init__` does not at all."""
    for path in ("actors/ray/__init__.py", "actors/ray/cli.py", "actors/ray/connection.py"):
        top, _lazy = imports((ROOT / path).read_text())
        assert not _under(top, "ray"), f"{path} imports Ray at module level"


def test_the_framework_reaches_the_ray_edge_only_from_the_edge() -> None:
    for path, (top, lazy) in _sources("actors").items():
        if path.startswith(RAY_EDGE):
            continue
        reached = _under(top | lazy, "actors.ray")
        assert not reached, f"{path} imports {sorted(reached)}"


def test_the_sdk_imports_the_framework_only_lazily_and_only_where_documented() -> None:
    for path, (top, lazy) in _sources("ghbot").items():
        assert not _under(top, "actors"), f"{path} imports actors at module level"
        allowed = SDK_TO_ACTORS.get(path, set())
        assert _under(lazy, "actors") <= allowed, f"{path} imports {_under(lazy, 'actors')}"


def test_the_cli_commands_of_the_framework_plug_in_through_entry_points() -> None:
    """`ghbot`'s CLI names no module of `actors`: they are found as `ghbot.cli` plugins."""
    from importlib.metadata import entry_points

    from ghbot import cli

    plugins = {entry.value for entry in entry_points(group=cli.PLUGINS)}
    assert plugins >= {"actors.cli", "actors.ray.cli"}
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr, arg-type]
    assert {"new", "fake-github", "register", "dev", "receive", "status", "redeliver"} <= commands


def test_the_reader_sees_imports_at_every_level() -> None:
    source = (
        "import ray\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from actors.ray.lifecycle import x\ntry:\n    import yaml\nexcept ImportError:\n"
        "    import json\ndef f():\n    from actors import on\nclass C:\n"
        "    def g(self):\n        import ray.util\n"
    )
    top, lazy = imports(source)
    assert top == {"ray", "typing", "actors.ray.lifecycle", "yaml", "json"}
    assert lazy == {"actors", "ray.util"}


def test_the_shard_changes_its_hosts_only_through_their_methods() -> None:
    """`ShardCore` hands a host what it journaled (`accept`, `restore`, ...); it never
    sets a host's fields itself (the host keeps its sequence numbers consistent)."""
    # `ShardCore` and its bases, `ShardHandover` and `ShardHosts`.
    modules = ("shard.py", "shard_handover.py", "shard_hosts.py")
    trees = [ast.parse((ROOT / "actors" / name).read_text()) for name in modules]
    written = [
        f"{target.value.id}.{target.attr}"
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id not in ("self", "bot")
    ]
    assert written == []
