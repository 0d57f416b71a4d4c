"""Test session setup. Fixture modules in tests/fixtures/ are registered as plugins, so each
service (PostgreSQL, Kafka, the AWS emulator, Lambda runtimes) keeps its fixtures apart."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)
