"""Kafka mappings through the YAML loader: the source block, starting positions in both
places, and ``kafka://TOPIC`` destinations on the source's cluster."""

from __future__ import annotations

import pytest

from connectors.kafka.settings import KafkaDestinationSettings, KafkaSourceSettings
from connectors.kafka.source import KafkaSource
from router.config import load_config_text

YAML = """
router:
  allow_plaintext_secrets: true   # the password below is written in place
functions:
  echo:
    invoker: python
    handler: handlers:echo
mappings:
  - name: orders
    function: echo
    source:
      type: kafka
      bootstrap_servers: ["127.0.0.1:9092"]
      topics: [orders]
      consumer_group_id: orders-router
      starting_position: TRIM_HORIZON
      sasl_plain_password: s3cret
      sasl_plain_username: router
      sasl_mechanism: PLAIN
      security_protocol: SASL_PLAINTEXT
    batch_size: 100
    destination_config:
      on_failure:
        destination: kafka://orders-failed
"""


def test_issue_example_loads_with_aws_defaults() -> None:
    config = load_config_text(YAML, "kafka.yaml")
    (mapping,) = config.mappings
    settings = mapping.source.settings
    assert isinstance(settings, KafkaSourceSettings)
    assert settings.starting_position == "TRIM_HORIZON"
    assert settings.consumer_group_id == "orders-router"
    assert mapping.starting_position == KafkaSource.traits.starting_position_default
    assert mapping.maximum_batching_window == 0.5
    assert mapping.on_failure is not None
    destination = mapping.on_failure.settings
    assert isinstance(destination, KafkaDestinationSettings)
    assert destination.topic == "orders-failed"
    assert destination.bootstrap_servers == ["127.0.0.1:9092"]
    assert destination.sasl_plain_username == "router"
    assert "s3cret" not in repr(mapping)


def test_sasl_ssl_client_settings_with_referenced_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", "from-the-environment")
    settings = KafkaSourceSettings.model_validate(
        {
            "bootstrap_servers": "b1:9096",
            "topics": ["orders"],
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "router",
            "sasl_plain_password": "${KAFKA_PASSWORD}",
            "ssl_check_hostname": False,
        }
    )
    kwargs = settings.client_kwargs()
    assert kwargs["sasl_plain_password"] == "from-the-environment"
    assert kwargs["ssl_context"].check_hostname is False
    assert settings.model_dump(mode="json")["sasl_plain_password"] == "${KAFKA_PASSWORD}"
