"""The dependency direction of docs/architecture.md, checked on the source: each package
imports only what its row of the table allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "inhouse"
TOP_LEVEL = {"config", "errors", "validation", "__main__"}

ALLOWED: dict[str, set[str]] = {
    "protocol": {"errors"},
    "engine": {"protocol", "config", "errors"},
    "store": set(),
    "security": {"store", "config", "errors"},
    "registry": {"store", "security", "errors"},
    "tenancy": {"store", "security", "config", "errors"},
    "monitor": set(),
    "fleet": {
        "engine", "protocol", "registry", "monitor", "store", "security", "config", "errors",
        "validation",
    },
    "flows": {"fleet", "store", "security", "config", "errors", "validation"},
    "node": {"engine", "protocol", "monitor", "security", "config", "errors"},
}  # fmt: skip
"""Packages not listed (gateway, api, cli) sit on top and may import those listed."""


def imported_packages(package: str) -> dict[str, set[str]]:
    """inhouse packages (or top-level modules) each module of ``package`` imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((SOURCE / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "inhouse" and len(parts) > 1 and parts[1] != package:
                    names.add(parts[1])
        found[str(path.relative_to(SOURCE))] = names
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_domain_package_imports_only_what_the_map_allows(package: str) -> None:
    allowed = ALLOWED[package]
    wrong = {
        module: sorted(names - allowed)
        for module, names in imported_packages(package).items()
        if names - allowed
    }
    assert wrong == {}


def test_the_gateway_and_the_api_never_import_what_sits_above_them() -> None:
    """The domain packages and the node are held to their rows above; here the top."""
    for package, above in (("gateway", {"api", "cli"}), ("api", {"cli"})):
        for module, names in imported_packages(package).items():
            assert not names & above, f"{module} imports {sorted(names & above)}"


def test_every_package_is_on_the_map() -> None:
    packages = {p.name for p in SOURCE.iterdir() if (p / "__init__.py").is_file()}
    documented = (SOURCE.parents[1] / "docs" / "architecture.md").read_text()
    for package in packages:
        assert f"`{package}/`" in documented, f"{package}/ is missing from docs/architecture.md"
    assert packages - set(ALLOWED) == {"gateway", "api", "cli"}
