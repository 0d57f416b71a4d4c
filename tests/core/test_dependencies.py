"""Every runtime dependency in pyproject.toml is used by the installed router: imported by a
module of ``router`` or ``connectors``, or (two of them) loaded on its behalf."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]

MODULES = {
    "aiohttp": "aiohttp",
    "orjson": "orjson",
    "pydantic": "pydantic",
    "pyyaml": "yaml",
    "sqlalchemy": "sqlalchemy",
    "alembic": "alembic",
    "watchfiles": "watchfiles",
    "prometheus_client": "prometheus_client",
}
"""Distribution -> the module the router imports."""
LOADED_FOR_US = {
    "aiosqlite": ("router/store/engine.py", "sqlite+aiosqlite://"),
    "tzdata": ("connectors/schedule/cron.py", "zoneinfo"),
}
"""Distribution -> (file, text) of what loads it: SQLAlchemy's ``sqlite+aiosqlite`` dialect
imports aiosqlite; zoneinfo reads tzdata's database where the system has none."""


def _runtime_dependencies() -> set[str]:
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def _imported() -> set[str]:
    found: set[str] = set()
    for package in ("router", "connectors"):
        for path in (REPOSITORY / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def test_every_runtime_dependency_is_used_at_run_time() -> None:
    dependencies = _runtime_dependencies()
    assert dependencies == set(MODULES) | set(LOADED_FOR_US), (
        "pyproject's runtime dependencies changed: say here how the router uses each"
    )
    imported = _imported()
    unused = sorted(d for d, module in MODULES.items() if module not in imported)
    assert not unused, f"runtime dependencies nothing in router/ or connectors/ imports: {unused}"
    for distribution, (file, text) in LOADED_FOR_US.items():
        assert text in (REPOSITORY / file).read_text(), f"{distribution}: {file} has no {text!r}"


def test_apscheduler_is_not_imported_at_run_time() -> None:
    assert "apscheduler" not in _imported()
