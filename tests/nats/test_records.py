"""NATS settings and the configuration of the documented mapping (pure)."""

from __future__ import annotations

import pytest

from connectors.nats.settings import NatsSourceSettings, consumer_name
from router.config import load_config_text
from router.errors import ConfigErrors


def test_consumer_names_and_settings() -> None:
    assert consumer_name("orders.eu v2") == "orders_eu_v2"
    s = NatsSourceSettings.model_validate(
        {"servers": "nats://a:4222, nats://b:4222", "stream": "ORDERS", "subjects": "o.>"}
    )
    assert s.servers == ["nats://a:4222", "nats://b:4222"] and s.subjects == ["o.>"]
    with pytest.raises(ValueError, match=r"password: \$\{NAME\}"):
        NatsSourceSettings(servers=["nats://u:pw@h:4222"], stream="S")
    with pytest.raises(ValueError, match="stream name"):
        NatsSourceSettings(servers=["nats://h:4222"], stream="a.b")


def test_the_documented_mapping_loads() -> None:
    config = load_config_text(
        """
functions:
  f: {invoker: python, handler: app:handle}
mappings:
  - name: js
    function: f
    source: {type: nats, servers: ["nats://127.0.0.1:4222"], stream: ORDERS, subjects: ["orders.>"]}
    starting_position: TRIM_HORIZON
""",
        "c.yaml",
    )
    (mapping,) = config.mappings
    assert mapping.source.type == "nats"
    assert mapping.batch_size == 100


def test_parallelization_without_key_header_is_refused() -> None:
    with pytest.raises(ConfigErrors, match=r"c.yaml:\d+: .*parallelization_factor.*key_header"):
        load_config_text(
            """
functions:
  f: {invoker: python, handler: app:handle}
mappings:
  - name: js
    function: f
    parallelization_factor: 2
    source: {type: nats, servers: ["nats://127.0.0.1:4222"], stream: ORDERS}
""",
            "c.yaml",
        )
