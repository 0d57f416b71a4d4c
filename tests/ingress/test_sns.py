"""SNS HTTP subscriptions: moto's SNS (over real HTTP) publishing to a ``router run``
process's subscription endpoint, and signed messages posted as SNS posts them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.fixtures.aws import REGION
from tests.ingress.router_process import lines, router_running, wait_for
from tests.ingress.sns_signing import Signer

pytestmark = pytest.mark.aws

HANDLER = """\
import json

def orders(event, context):
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:{port}
functions:
  orders: {invoker: python, handler: app:orders}
mappings:
  - name: alerts
    function: orders
    source:
      type: sns
      topic_arn: TOPIC
      path: /sns/alerts          # subscribe http://HOST:9000/sns/alerts to the topic
      verify_signatures: false   # emulators do not sign
  - name: signed
    function: orders
    source:
      type: sns
      topic_arn: SIGNED
      path: /sns/signed
      cert_file: CERT
    filter_criteria:
      filters:
        - pattern: '{"severity": ["high"]}'
"""


class Setup:
    url: str
    tmp: Path
    sns: Any
    topic: str
    signed_topic: str
    signer: Signer
    moto: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("sns")
    s = Setup()
    s.tmp, s.moto, s.signer = tmp, moto_server, Signer()
    s.sns = boto3.client("sns", endpoint_url=moto_server, region_name=REGION)
    s.topic = s.sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:8]}")["TopicArn"]
    s.signed_topic = s.sns.create_topic(Name=f"signed-{uuid.uuid4().hex[:8]}")["TopicArn"]
    (tmp / "cert.pem").write_bytes(s.signer.pem)
    config = (
        CONFIG.replace("SIGNED", s.signed_topic)
        .replace("TOPIC", s.topic)
        .replace("CERT", str(tmp / "cert.pem"))
    )
    with router_running(tmp, config, HANDLER, started="mapping signed started") as url:
        s.url = url
        yield s


def _calls(s: Setup) -> list[Any]:
    return lines(s.tmp / "calls.jsonl")


def _log(s: Setup) -> str:
    return (s.tmp / "router.log").read_text()


def test_the_subscription_is_confirmed_for_the_configured_topic(setup: Setup) -> None:
    s = setup
    subscribe_url = f"{s.moto}/?Action=ConfirmSubscription&TopicArn={s.topic}&Token=t0k3n"
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "t0k3n",
        "TopicArn": s.topic,
        "Message": f"You have chosen to subscribe to the topic {s.topic}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-12-01T12:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
    }
    headers = {"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "x"}
    answer = requests.post(
        f"{s.url}/sns/alerts", data=json.dumps(confirmation), headers=headers, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert f"confirmed the subscription to {s.topic}" in _log(s)
    # Another topic: refused, nothing fetched.
    other = {**confirmation, "TopicArn": f"{s.topic}-other"}
    answer = requests.post(
        f"{s.url}/sns/alerts", data=json.dumps(other), headers=headers, timeout=10
    )
    assert answer.status_code == 403
    assert "takes messages of" in answer.text
    assert f"confirmed the subscription to {s.topic}-other" not in _log(s)
    assert "SNS signatures are not verified" in _log(s)


def test_moto_publishes_notifications_delivered_as_aws_sns_events(setup: Setup) -> None:
    s = setup
    subscription = s.sns.subscribe(
        TopicArn=s.topic, Protocol="http", Endpoint=f"{s.url}/sns/alerts"
    )["SubscriptionArn"]
    message_id = s.sns.publish(TopicArn=s.topic, Message='{"alert": "disk"}', Subject="disk")[
        "MessageId"
    ]
    (event,) = wait_for(
        lambda: [c for c in _calls(s) if c["Records"][0]["Sns"]["MessageId"] == message_id],
        20,
        s.tmp / "router.log",
    )
    (record,) = event["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["EventVersion"] == "1.0"
    assert record["EventSubscriptionArn"].startswith(s.topic)
    sns = record["Sns"]
    assert sns["Type"] == "Notification"
    assert sns["TopicArn"] == s.topic
    assert sns["Subject"] == "disk"
    assert sns["Message"] == '{"alert": "disk"}'
    assert sns["SignatureVersion"] in ("1", "2")
    assert sns["SigningCertUrl"].startswith("https://sns.")
    assert sns["UnsubscribeUrl"].startswith("https://sns.")
    sample = json.loads(
        (Path(__file__).resolve().parents[1] / "fixtures/events/sns-event.json").read_text()
    )
    assert set(record) == set(sample["Records"][0])
    assert set(sns) == set(sample["Records"][0]["Sns"])
    s.sns.unsubscribe(SubscriptionArn=subscription)


def _notification(s: Setup, severity: str, message: str) -> dict[str, Any]:
    return s.signer.sign(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": s.signed_topic,
            "Message": message,
            "Timestamp": "2026-12-01T12:00:00.000Z",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {"severity": {"Type": "String", "Value": severity}},
        },
        "1",
    )


def test_signed_notifications_are_verified_and_filtered(setup: Setup) -> None:
    s = setup
    post = f"{s.url}/sns/signed"
    high = _notification(s, "high", "disk full")
    low = _notification(s, "low", "disk fine")
    forged = {**_notification(s, "high", "forged"), "Message": "altered"}
    assert requests.post(post, data=json.dumps(low), timeout=10).status_code == 200
    answer = requests.post(post, data=json.dumps(forged), timeout=10)
    assert answer.status_code == 403
    assert "does not match" in answer.text
    assert requests.post(post, data=json.dumps(high), timeout=10).status_code == 200
    (event,) = wait_for(
        lambda: [c for c in _calls(s) if c["Records"][0]["Sns"]["MessageId"] == high["MessageId"]],
        20,
        s.tmp / "router.log",
    )
    sns = event["Records"][0]["Sns"]
    assert sns["Signature"] == high["Signature"]
    assert sns["MessageAttributes"] == {"severity": {"Type": "String", "Value": "high"}}
    delivered = {c["Records"][0]["Sns"]["Message"] for c in _calls(s)}
    assert "disk fine" not in delivered and "altered" not in delivered


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ("not json", 400, "not an SNS message"),
        (json.dumps({"Type": "Notification"}), 400, "needs MessageId"),
    ],
)
def test_malformed_posts(setup: Setup, body: str, status: int, text: str) -> None:
    answer = requests.post(f"{setup.url}/sns/signed", data=body, timeout=10)
    assert answer.status_code == status
    assert text in answer.text


def test_a_signed_confirmation_is_verified_before_it_is_confirmed(setup: Setup) -> None:
    s = setup
    confirmation = s.signer.sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": "s1gn3d",
            "TopicArn": s.signed_topic,
            "Message": f"You have chosen to subscribe to the topic {s.signed_topic}.",
            "SubscribeURL": f"{s.moto}/?Action=ConfirmSubscription&TopicArn={s.signed_topic}"
            "&Token=s1gn3d",
            "Timestamp": "2026-12-01T12:00:00.000Z",
            "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        }
    )
    forged = {**confirmation, "SubscribeURL": f"{s.moto}/?Action=ListTopics"}
    answer = requests.post(f"{s.url}/sns/signed", data=json.dumps(forged), timeout=10)
    assert answer.status_code == 403
    assert f"confirmed the subscription to {s.signed_topic}" not in _log(s)
    answer = requests.post(f"{s.url}/sns/signed", data=json.dumps(confirmation), timeout=10)
    assert answer.status_code == 200, answer.text
    assert f"confirmed the subscription to {s.signed_topic}" in _log(s)


def test_an_unsubscribe_confirmation_is_answered(setup: Setup) -> None:
    s = setup
    message = {
        "Type": "UnsubscribeConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "t",
        "TopicArn": s.topic,
        "Message": "You have unsubscribed.",
        "SubscribeURL": f"{s.moto}/?Action=ConfirmSubscription&TopicArn={s.topic}&Token=t",
        "Timestamp": "2026-12-01T12:00:00.000Z",
    }
    answer = requests.post(f"{s.url}/sns/alerts", data=json.dumps(message), timeout=10)
    assert answer.status_code == 200
    assert f"{s.topic} unsubscribed this endpoint" in _log(s)
