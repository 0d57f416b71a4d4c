"""The ARNs the router makes up name one account: the function's and the events' alike."""

from __future__ import annotations

import dataclasses

import pytest

from connectors.eventbridge.source import EventBridgeSettings
from connectors.function_url.payload import HttpRequestView
from connectors.function_url.source import FunctionUrlSettings
from connectors.rabbitmq.source import broker_arn
from connectors.schedule.source import ScheduleSettings
from router.config import load_config_text
from router.errors import ConfigErrors
from router.models import ACCOUNT_ID, function_arn


def _account(arn: str) -> str:
    return arn.split(":")[4]


def test_function_and_event_arns_name_the_same_account() -> None:
    assert ACCOUNT_ID == "123456789012"
    assert _account(function_arn("f")) == ACCOUNT_ID
    assert _account(broker_arn("127.0.0.1")) == ACCOUNT_ID
    for settings in (EventBridgeSettings, ScheduleSettings, FunctionUrlSettings):
        assert settings.model_fields["account"].get_default(call_default_factory=True) == ACCOUNT_ID
    fields = {f.name: f for f in dataclasses.fields(HttpRequestView)}
    assert fields["account_id"].default == ACCOUNT_ID


CONFIG = """
router:
  account_id: "111122223333"
functions:
  f: {invoker: python, handler: 'json:dumps'}
mappings:
  - name: tick
    function: f
    source: {type: schedule, schedule: rate(1 hour)}
  - name: bus
    function: f
    source: {type: eventbridge}
  - name: url
    function: f
    source: {type: http, path: /f}
  - name: mq
    function: f
    source: {type: rabbitmq, url: 'amqp://127.0.0.1:5672/', queues: [q]}
"""


def test_router_account_id_names_every_made_up_arn() -> None:
    config = load_config_text(CONFIG, "t.yaml")
    assert config.settings.account_id == "111122223333"
    function = config.functions["f"]
    assert _account(function.invoked_arn) == "111122223333"
    accounts = {m.name: m.source.settings.account for m in config.mappings}  # type: ignore[attr-defined]
    assert accounts == dict.fromkeys(("tick", "bus", "url", "mq"), "111122223333")
    mq = next(m for m in config.mappings if m.name == "mq").source.settings
    assert _account(broker_arn("127.0.0.1", mq.account)) == "111122223333"  # type: ignore[attr-defined]
    # Outside that configuration, the default again.
    assert _account(function_arn("g")) == ACCOUNT_ID


def test_a_mapping_may_still_name_its_own_account() -> None:
    text = CONFIG.replace("rate(1 hour)}", "rate(1 hour), account: '444455556666'}")
    tick = next(m for m in load_config_text(text, "t.yaml").mappings if m.name == "tick")
    assert tick.source.settings.account == "444455556666"  # type: ignore[attr-defined]


def test_an_account_id_is_twelve_digits() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config_text('router: {account_id: "12"}\n', "t.yaml")
    assert str(info.value) == "t.yaml:1: router.account_id: must match ^\\d{12}$"
