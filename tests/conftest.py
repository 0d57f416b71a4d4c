"""Test session setup. Fixture modules in tests/fixtures/ are registered as plugins, so each
service (PostgreSQL, Kafka, the AWS emulator, Lambda runtimes) keeps its fixtures apart."""

from __future__ import annotations

from pathlib import Path

# procs first: other fixture modules import it, and a module imported before pytest registers
# it as a plugin cannot be assertion-rewritten (a warning, which is an error here).
pytest_plugins = [
    "tests.fixtures.procs",
    *sorted(
        f"tests.fixtures.{p.stem}"
        for p in (Path(__file__).parent / "fixtures").glob("*.py")
        if p.stem not in ("__init__", "procs")
    ),
]
