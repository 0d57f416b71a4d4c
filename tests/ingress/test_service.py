"""The ingress listener as a component of the service: started before anything is applied,
closed with the rest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router.config import load_config_text
from router.errors import SetupError
from router.service import Service
from router.store import SQLStore
from tests.helpers import eventually

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


FAILING = """\
def flaky(event, context):
    raise RuntimeError("always fails")
"""

RECONFIGURED = """
router:
  ingress: {listen: "127.0.0.1:0", retry_delay_scale: 0.01}
functions:
  flaky:
    invoker: python
    handler: reconfigured_app:flaky
    event_invoke_config:
      maximum_retry_attempts: RETRIES
      destination_config:
        on_failure: {destination: "directory:FOLDER"}
mappings: []
"""


async def test_a_changed_event_invoke_config_applies_while_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "reconfigured_app.py").write_text(FAILING)
    monkeypatch.syspath_prepend(str(tmp_path))

    def config(retries: int, folder: str) -> Any:
        text = RECONFIGURED.replace("RETRIES", str(retries))
        return load_config_text(text.replace("FOLDER", str(tmp_path / folder)), "r.yaml")

    def records(folder: str) -> list[Any]:
        return [json.loads(p.read_text()) for p in (tmp_path / folder / "flaky").glob("*.json")]

    url = f"sqlite:///{tmp_path / 'router.db'}"
    async with Service(config(0, "first"), store_url=url, http_listen="off") as service:
        assert service.ingress is not None
        invoke = f"{service.ingress.listener.url}/2015-03-31/functions/flaky/invocations"
        headers = {"X-Amz-Invocation-Type": "Event"}
        async with aiohttp.ClientSession() as session:
            async with session.post(invoke, data=b'{"n": 1}', headers=headers) as answer:
                assert answer.status == 202
            (first,) = await eventually(lambda: records("first"), what="the first record")
            assert first["requestContext"]["approximateInvokeCount"] == 1
            with caplog.at_level(logging.INFO, logger="router.ingress.invoke"):
                await service.router.update_functions(config(1, "second").functions)
                await eventually(
                    lambda: "runs its new event_invoke_config" in caplog.text,
                    what="the target restarted",
                )
            async with session.post(invoke, data=b'{"n": 2}', headers=headers) as answer:
                assert answer.status == 202
            (second,) = await eventually(lambda: records("second"), what="the second record")
    assert second["requestPayload"] == {"n": 2}
    assert second["requestContext"]["approximateInvokeCount"] == 2
