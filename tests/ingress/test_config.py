"""``router.ingress`` in the YAML: defaults, credentials by reference, located errors."""

from __future__ import annotations

import pytest

from router.config import load_config_text
from router.errors import ConfigError

FUNCTIONS = """
functions:
  orders: {invoker: python, handler: router.examples.hello:handler}
"""


def test_absent_means_no_listener() -> None:
    assert load_config_text(FUNCTIONS, "r.yaml").settings.ingress is None


def test_defaults_bind_loopback() -> None:
    config = load_config_text("router:\n  ingress: {}\n" + FUNCTIONS, "r.yaml")
    ingress = config.settings.ingress
    assert ingress is not None
    assert ingress.listen == "127.0.0.1:9000"
    assert ingress.credentials == ()
    assert (ingress.lease_timeout, ingress.poll_interval) == (30.0, 1.0)
    assert ingress.retry_delay_scale == 1.0  # Lambda's own timing


def test_the_retry_delay_scale_is_read() -> None:
    text = "router:\n  ingress: {retry_delay_scale: 0.01}\n" + FUNCTIONS
    ingress = load_config_text(text, "r.yaml").settings.ingress
    assert ingress is not None
    assert ingress.retry_delay_scale == 0.01


def test_credentials_are_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGRESS_SECRET", "s3cr3t")
    text = (
        """
router:
  ingress:
    listen: 0.0.0.0:9100
    credentials:
      - {access_key_id: AKID1, secret_access_key: "${INGRESS_SECRET}"}
      - {AccessKeyId: AKID2, SecretAccessKey: {file: /run/secrets/none}}
    queue: {lease_timeout: 60, poll_interval: 0.5}
"""
        + FUNCTIONS
    )
    ingress = load_config_text(text, "r.yaml").settings.ingress
    assert ingress is not None
    assert ingress.listen == "0.0.0.0:9100"
    assert [c.access_key_id for c in ingress.credentials] == ["AKID1", "AKID2"]
    assert ingress.credentials[0].secret_access_key.reveal() == "s3cr3t"
    assert "s3cr3t" not in repr(ingress)
    one = load_config_text(
        "router:\n  ingress:\n    credentials: {access_key_id: A, secret_access_key: "
        '"${INGRESS_SECRET}"}\n' + FUNCTIONS,
        "r.yaml",
    ).settings.ingress
    assert one is not None and len(one.credentials) == 1


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "credentials: {access_key_id: A, secret_access_key: plain}",
            "r.yaml:3: router.ingress.credentials[0].secret_access_key: a secret must not be "
            "written in the configuration",
        ),
        ("listen: localhost", "r.yaml:3: router.ingress.listen: must be HOST:PORT"),
        ("lisen: 127.0.0.1:9000", "unknown key 'lisen'; did you mean 'listen'?"),
        ("queue: {lease_timeout: 1}", "router.ingress.queue.lease_timeout: must be >= 5"),
        ("retry_delay_scale: 0", "r.yaml:3: router.ingress.retry_delay_scale: must be > 0"),
        ("retry_delay_scale: 1.5", "r.yaml:3: router.ingress.retry_delay_scale: must be <= 1"),
    ],
)
def test_bad_settings_are_located(block: str, message: str) -> None:
    text = "router:\n  ingress:\n    " + block.replace("\n", "\n    ") + "\n" + FUNCTIONS
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "r.yaml")
    assert message in str(caught.value)


EVENT_INVOKE = """
functions:
  orders:
    invoker: python
    handler: router.examples.hello:handler
    event_invoke_config:
      {block}
"""


def test_event_invoke_config_defaults_are_lambdas() -> None:
    function = load_config_text(FUNCTIONS, "r.yaml").functions["orders"]
    settings = function.event_invoke
    assert (settings.maximum_retry_attempts, settings.maximum_event_age) == (2, 21600)
    assert settings.on_failure is settings.on_success is None


def test_event_invoke_config_in_either_spelling() -> None:
    ours = load_config_text(
        EVENT_INVOKE.format(
            block="{maximum_retry_attempts: 0, maximum_event_age: 60, destination_config: "
            '{on_failure: {destination: "arn:aws:sqs:us-east-1:123456789012:dlq"}, '
            "on_success: {destination: table}}}"
        ),
        "r.yaml",
    ).functions["orders"]
    aws = load_config_text(
        EVENT_INVOKE.replace("event_invoke_config", "EventInvokeConfig").format(
            block="{MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60, DestinationConfig: "
            '{OnFailure: {Type: SQS, Destination: "arn:aws:sqs:us-east-1:123456789012:dlq"}, '
            "OnSuccess: {Destination: table}}}"
        ),
        "r.yaml",
    ).functions["orders"]
    assert ours.event_invoke == aws.event_invoke
    settings = ours.event_invoke
    assert (settings.maximum_retry_attempts, settings.maximum_event_age) == (0, 60)
    assert settings.on_failure is not None and settings.on_failure.type == "sqs"
    assert settings.on_success is not None and settings.on_success.type == "table"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "{maximum_retry_attempts: 3}",
            "r.yaml:7: functions.orders.event_invoke_config.maximum_retry_attempts: must be "
            "between 0 and 2 (Lambda's limits for asynchronous invocation), got 3",
        ),
        (
            "{MaximumEventAgeInSeconds: 30}",
            "r.yaml:7: functions.orders.event_invoke_config.MaximumEventAgeInSeconds: must be "
            "between 60 and 21600 seconds (Lambda's limits for asynchronous invocation), got 30",
        ),
        ("{maximum_event_age: 22000}", "between 60 and 21600 seconds"),
        ("{maximum_retry_attempts: '1'}", "maximum_retry_attempts"),
        ("{maximum_retries: 1}", "unknown key 'maximum_retries'"),
        (
            "{destination_config: {on_failure: {destination: 'nowhere'}}}",
            "functions.orders.event_invoke_config.destination_config.on_failure.destination",
        ),
    ],
)
def test_bad_event_invoke_config_is_located(block: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(EVENT_INVOKE.format(block=block), "r.yaml")
    assert message in str(caught.value)
