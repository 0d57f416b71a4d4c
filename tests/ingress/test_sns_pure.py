"""SNS messages, their signatures (SignatureVersion 1 and 2) and the aws:sns event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.sns.messages import (
    MessageError,
    attributes_view,
    body_view,
    lambda_event,
    parse_message,
)
from connectors.sns.signature import SignatureError, SignatureVerifier
from tests.ingress.sns_signing import Signer

SAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/events/sns-event.json").read_text()
)
TOPIC = "arn:aws:sns:us-east-1:123456789012:alerts"
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem"
)
NOTIFICATION = {
    "Type": "Notification",
    "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
    "TopicArn": TOPIC,
    "Subject": "disk",
    "Message": '{"alert": "disk"}',
    "Timestamp": "2026-12-01T12:00:00.000Z",
    "SignatureVersion": "2",
    "Signature": "EXAMPLE",
    "SigningCertURL": CERT_URL,
    "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn="
    "arn:aws:sns:us-east-1:123456789012:alerts:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
    "MessageAttributes": {"severity": {"Type": "String", "Value": "high"}},
}
CONFIRMATION = {
    "Type": "SubscriptionConfirmation",
    "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
    "Token": "2336412f37f",
    "TopicArn": TOPIC,
    "Message": "You have chosen to subscribe to the topic ...",
    "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
    "Timestamp": "2026-12-01T12:00:00.000Z",
    "SigningCertURL": CERT_URL,
}


def test_the_lambda_event_is_the_sample_aws_documents() -> None:
    message = parse_message(json.dumps(NOTIFICATION).encode())
    event = lambda_event(message, SAMPLE["Records"][0]["EventSubscriptionArn"])
    assert event == SAMPLE


def test_no_subject_is_null_and_no_attributes_empty() -> None:
    fields = {k: v for k, v in NOTIFICATION.items() if k not in ("Subject", "MessageAttributes")}
    sns = lambda_event(parse_message(json.dumps(fields).encode()), "arn")["Records"][0]["Sns"]
    assert sns["Subject"] is None
    assert sns["MessageAttributes"] == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b"{}", "has no Type"),
        (json.dumps({**NOTIFICATION, "Type": "Other"}).encode(), "'Other' is none of"),
        (
            json.dumps({k: v for k, v in NOTIFICATION.items() if k != "Message"}).encode(),
            "needs Message",
        ),
        (
            json.dumps({k: v for k, v in CONFIRMATION.items() if k != "Token"}).encode(),
            "needs Token",
        ),
        (json.dumps({**NOTIFICATION, "MessageAttributes": []}).encode(), "must be an object"),
    ],
)
def test_malformed_messages(body: bytes, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        parse_message(body)


def test_the_string_to_sign() -> None:
    notification = parse_message(json.dumps(NOTIFICATION).encode())
    assert notification.string_to_sign().decode() == (
        f"Message\n{NOTIFICATION['Message']}\nMessageId\n{NOTIFICATION['MessageId']}\n"
        f"Subject\ndisk\nTimestamp\n{NOTIFICATION['Timestamp']}\nTopicArn\n{TOPIC}\n"
        "Type\nNotification\n"
    )
    confirmation = parse_message(json.dumps(CONFIRMATION).encode())
    assert confirmation.string_to_sign().decode().split("\n")[::2] == [
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
        "",
    ]


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def _verifier(signer: Signer, fetched: list[str], **kwargs: Any) -> SignatureVerifier:
    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return signer.pem

    return SignatureVerifier(fetch=fetch, **kwargs)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("fields", [NOTIFICATION, CONFIRMATION])
async def test_signatures_verify(signer: Signer, version: str, fields: dict[str, Any]) -> None:
    fetched: list[str] = []
    verifier = _verifier(signer, fetched)
    message = parse_message(json.dumps(signer.sign(fields, version)).encode())
    await verifier.verify(message)
    await verifier.verify(message)
    assert fetched == [CERT_URL]  # fetched once, then kept


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"Message": "altered"}, "does not match"),
        ({"Subject": "other"}, "does not match"),
        ({"SignatureVersion": "3"}, "neither 1 nor 2"),
        ({"Signature": "%%%"}, "not base64"),
        ({"SigningCertURL": "http://sns.us-east-1.amazonaws.com/x.pem"}, "is not https"),
        ({"SigningCertURL": "https://sns.evil.example/x.pem"}, "is not https on a host"),
        ({"SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.example/x.pem"}, "host"),
    ],
)
async def test_bad_signatures(signer: Signer, change: dict[str, str], reason: str) -> None:
    signed = {**signer.sign(NOTIFICATION), **change}
    with pytest.raises(SignatureError, match=reason):
        await _verifier(signer, []).verify(parse_message(json.dumps(signed).encode()))


async def test_another_key_does_not_verify(signer: Signer) -> None:
    other = Signer()
    signed = other.sign(NOTIFICATION)
    with pytest.raises(SignatureError, match="does not match"):
        await _verifier(signer, []).verify(parse_message(json.dumps(signed).encode()))


async def test_a_configured_certificate_is_used_instead_of_fetching(signer: Signer) -> None:
    fetched: list[str] = []
    verifier = _verifier(signer, fetched, cert_pem=signer.pem)
    signed = {**signer.sign(NOTIFICATION), "SigningCertURL": "http://anywhere/x.pem"}
    await verifier.verify(parse_message(json.dumps(signed).encode()))
    assert fetched == []
    with pytest.raises(SignatureError, match="no PEM certificate"):
        _verifier(signer, [], cert_pem=b"junk")


async def test_a_configured_host_pattern(signer: Signer) -> None:
    verifier = _verifier(signer, [], cert_host=r"^sns\.internal$")
    signed = {**signer.sign(NOTIFICATION), "SigningCertURL": "https://sns.internal/c.pem"}
    await verifier.verify(parse_message(json.dumps(signed).encode()))
    with pytest.raises(SignatureError, match="host"):
        await verifier.verify(parse_message(json.dumps(signer.sign(NOTIFICATION)).encode()))


def _event(attributes: dict[str, Any], message: str = "{}") -> dict[str, Any]:
    return {"Records": [{"Sns": {"MessageAttributes": attributes, "Message": message}}]}


@pytest.mark.parametrize(
    ("attributes", "view"),
    [
        ({"s": {"Type": "String", "Value": "high"}}, {"s": "high"}),
        ({"n": {"Type": "Number", "Value": "12.5"}}, {"n": 12.5}),
        ({"n": {"Type": "Number.int", "Value": "3"}}, {"n": 3}),
        ({"a": {"Type": "String.Array", "Value": '["x", 1]'}}, {"a": ["x", 1]}),
        ({"b": {"Type": "Binary", "Value": "AAE="}}, {}),
    ],
)
def test_filter_views(attributes: dict[str, Any], view: dict[str, Any]) -> None:
    assert attributes_view(_event(attributes)) == view


def test_body_view() -> None:
    assert body_view(_event({}, '{"alert": "disk"}')) == {"alert": "disk"}
    assert body_view(_event({}, "plain text")) == {}
