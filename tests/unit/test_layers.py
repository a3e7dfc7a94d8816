"""The import contract covers the whole service: a new package must take its place in a layer of .importlinter."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layered_modules() -> set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"]
    return {module.strip() for line in layers.splitlines() for module in line.split("|") if module.strip()}


def test_every_package_and_module_of_the_service_has_a_layer():
    app = ROOT / "app"
    modules = {
        f"app.{path.name.removesuffix('.py')}"
        for path in app.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.suffix == ".py" and path.name != "__init__.py")
    }
    assert modules - _layered_modules() == set(), "add them to the layers of .importlinter"
    assert _layered_modules() - modules == set(), "the contract names modules that do not exist"


def test_class_names_are_unique_across_the_service():
    # one name, one class: a reader (and a grep) never has to ask which Outcome or Decision is meant
    seen: dict[str, list[str]] = {}
    for root in ("app", "channel_providers"):
        for path in sorted((ROOT / root).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    seen.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
