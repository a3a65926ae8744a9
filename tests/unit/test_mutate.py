"""`make mutate`: what pyproject.toml's [tool.mutmut] names exists, so the settings do
not rot between the runs made by hand."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_mutation_settings_name_files_and_folders_that_exist() -> None:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    named = (
        settings["source_paths"]
        + settings["only_mutate"]
        + settings["pytest_add_cli_args_test_selection"]
        + settings["also_copy"]
        + [a.split("=", 1)[1] for a in settings["pytest_add_cli_args"] if a.startswith("--ignore=")]
    )
    missing = [path for path in named if not (ROOT / path).exists()]
    assert missing == []
    assert all(path.endswith(".py") for path in settings["only_mutate"])


def test_make_mutate_pins_mutmut() -> None:
    recipe = re.search(r"^mutate:.*\n((?:\t.+\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    assert '"mutmut==3.8.1"' in recipe.group(1) and "mutmut run" in recipe.group(1)
