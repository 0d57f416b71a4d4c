from __future__ import annotations

import pytest

from tests.config import plugins


@pytest.fixture
def test_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the registry at the small test plug-ins of tests/config/plugins.py."""
    plugins.install(monkeypatch)
