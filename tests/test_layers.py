"""Layers depend one way: bench | deploy → app → operators → engines → models → common.

The contract is in pyproject.toml (`[tool.importlinter]`) and `lint-imports` (import-linter)
checks it. One test runs it on the product; another runs the same contract on a small package
tree made here, once clean and once with a deliberate upward import, to show the contract
really refuses a lower layer importing an upper one. A last test keeps the environment out of
the engines and operators: only the application's settings read it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "models", "engines", "operators", "app", "deploy", "bench")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contract() -> dict:
    """The product's import-linter configuration, as pyproject.toml holds it."""
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def _lint(root: Path, *config: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *config], cwd=root, capture_output=True, text=True, timeout=300, env=environment
    )


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_config(path: Path, config: dict) -> None:
    """`config` (the `[tool.importlinter]` table) as a pyproject.toml of its own."""
    lines = ["[tool.importlinter]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in config.items() if key != "contracts"]
    for contract in config["contracts"]:
        lines += ["", "[[tool.importlinter.contracts]]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in contract.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def toy_tree(tmp_path: Path) -> Path:
    """One empty package per root package of the contract, plus a module in each that imports the layer below."""
    config = _contract()
    layers = [[name.strip() for name in layer.split("|")] for layer in config["contracts"][0]["layers"]]
    for package in config["root_packages"]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
    for upper, lower in zip(layers, layers[1:]):
        for package in upper:
            (tmp_path / package / "uses_lower.py").write_text(f"import {lower[0]}\n", encoding="utf-8")
    _write_config(tmp_path / "pyproject.toml", config)
    return tmp_path


def test_the_product_keeps_its_layers():
    assert LINT_IMPORTS.is_file(), f"import-linter is not installed next to {sys.executable} (requirements-test.txt)"
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contract_allows_downward_imports(toy_tree: Path):
    result = _lint(toy_tree)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("lower", "upper"), [("engines", "app"), ("engines", "operators"), ("models", "engines"), ("common", "models")])
def test_the_contract_refuses_a_lower_layer_importing_an_upper_one(toy_tree: Path, lower: str, upper: str):
    (toy_tree / lower / "reaches_up.py").write_text(f"import {upper}\n", encoding="utf-8")
    result = _lint(toy_tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{lower} is not allowed to import {upper}" in result.stdout
    assert f"{lower}.reaches_up -> {upper}" in result.stdout


def _environment_reads(path: Path, root: Path = REPO) -> list[str]:
    """`os.environ` / `os.getenv` uses in one module, as 'file:line' relative to `root`, in line order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
            name = node.attr
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in {"environ", "getenv"} for a in node.names):
            name = "from os import"
        if name:
            found.append((node.lineno, f"{path.relative_to(root).as_posix()}:{node.lineno}"))
    return [hit for _, hit in sorted(found)]


def test_only_the_application_reads_the_environment():
    reads = [hit for package in ("engines", "operators") for path in sorted((REPO / package).rglob("*.py")) for hit in _environment_reads(path)]
    assert reads == [], "the engines and operators take explicit values from app/settings.py; found environment reads at " + ", ".join(reads)


def test_the_environment_check_finds_a_read(tmp_path: Path):
    (tmp_path / "engines").mkdir()
    sample = tmp_path / "engines" / "reads.py"
    sample.write_text("import os\nvalue = os.environ.get('X')\nfrom os import getenv\nother = os.getenv('Y')\n", encoding="utf-8")
    assert _environment_reads(sample, tmp_path) == ["engines/reads.py:2", "engines/reads.py:3", "engines/reads.py:4"]


# --------------------------------------------------------------------------- no import cycles


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(module: str) -> None:
        nonlocal counter
        index[module] = low[module] = counter
        counter += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles_in_product_code(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]
