"""The ingress listener as a component of the service: started before anything is applied,
closed with the rest."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from router.config import load_config_text
from router.errors import SetupError
from router.service import Service
from router.store import SQLStore

CONFIG = """
router:
  ingress: {listen: "127.0.0.1:PORT"}
functions:
  hello: {invoker: python, handler: router.examples.hello:handler}
mappings: []
"""


async def test_the_service_serves_the_ingress_listener(tmp_path: Path) -> None:
    config = load_config_text(CONFIG.replace("PORT", "0"), "r.yaml")
    url = f"sqlite:///{tmp_path / 'router.db'}"
    async with Service(config, store_url=url, http_listen="off") as service:
        assert service.ingress is not None
        base = service.ingress.listener.url
        async with aiohttp.ClientSession() as session, session.get(f"{base}/nothing") as answer:
            assert answer.status == 404
            assert answer.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(f"{base}/nothing"):
            pass


async def test_a_port_in_use_applies_nothing(tmp_path: Path) -> None:
    config = load_config_text(CONFIG.replace("PORT", "0"), "r.yaml")
    url = f"sqlite:///{tmp_path / 'router.db'}"
    async with Service(config, store_url=url, http_listen="off") as first:
        assert first.ingress is not None
        port = first.ingress.listener.url.rsplit(":", 1)[1]
        taken = load_config_text(
            CONFIG.replace("PORT", port).replace("mappings: []", MAPPING), "r.yaml"
        )
        other = f"sqlite:///{tmp_path / 'other.db'}"
        with pytest.raises(SetupError, match="ingress listener: Address already in use"):
            async with Service(taken, store_url=other, http_listen="off"):
                pass
    async with SQLStore(other) as store:
        assert await store.list_mappings() == []


MAPPING = """
mappings:
  - name: inbox
    function: hello
    source: {type: directory, path: ./inbox-never-created}
"""
