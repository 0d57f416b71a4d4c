"""The ARNs the router makes up name one account: the function's and the events' alike."""

from __future__ import annotations

import dataclasses

from connectors.eventbridge.source import EventBridgeSettings
from connectors.function_url.payload import HttpRequestView
from connectors.function_url.source import FunctionUrlSettings
from connectors.rabbitmq.source import broker_arn
from connectors.schedule.source import ScheduleSettings
from router.models import ACCOUNT_ID, function_arn


def _account(arn: str) -> str:
    return arn.split(":")[4]


def test_function_and_event_arns_name_the_same_account() -> None:
    assert ACCOUNT_ID == "123456789012"
    assert _account(function_arn("f")) == ACCOUNT_ID
    assert _account(broker_arn("127.0.0.1")) == ACCOUNT_ID
    for settings in (EventBridgeSettings, ScheduleSettings, FunctionUrlSettings):
        assert settings.model_fields["account"].default == ACCOUNT_ID
    fields = {f.name: f for f in dataclasses.fields(HttpRequestView)}
    assert fields["account_id"].default == ACCOUNT_ID
