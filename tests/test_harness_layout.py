"""The harness's layout: every ``__all__`` sorted and importable, the library never imports it, cheap imports."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import simulations

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(simulations.__path__, "simulations.")
    if not info.name.endswith("__main__")  # running it is the point of a __main__: it exits
)


def isort_key(name: str) -> tuple[int, str]:  # ruff's RUF022 order: CONSTANTS, Classes, functions
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("name", ["simulations", *MODULES])
def test_all_is_sorted_and_every_name_imports(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)
    assert names == sorted(names, key=isort_key)
    assert len(set(names)) == len(names)
    for exported in names:
        assert getattr(module, exported) is not None, exported


def test_an_unknown_name_of_the_package_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'simulatee'"):
        _ = simulations.simulatee  # type: ignore[attr-defined]


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("part", ["fedcompress", "clients", "server"])
def test_the_library_and_the_flower_apps_never_import_the_harness(part: str) -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / part).rglob("*.py"))
        if any(m == "simulations" or m.startswith("simulations.") for m in _imported_modules(path))
    ]
    assert offenders == []


def test_every_command_module_registers_itself() -> None:
    from simulations.cli import COMMANDS, build_parser

    for name in COMMANDS:
        assert callable(importlib.import_module(name).register)
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert list(choices) == ["settings", "simulate", "federate", "bench", "sweep", "report", "distill", "audit"]


def test_the_package_and_the_command_line_import_no_heavy_library() -> None:
    code = (
        "import sys, simulations, simulations.cli as cli; cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'matplotlib', 'flwr', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
