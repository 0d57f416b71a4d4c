"""With ``router.ingress.credentials``: PutEvents and an ``AWS_IAM`` function URL take only
requests signed (SigV4) with a configured key, as AWS answers them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.ingress.router_process import lines, router_running, wait_for

HANDLER = """\
import json

def orders(event, context):
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
    return {"statusCode": 200, "body": "signed ok"}
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:{port}
    credentials: {access_key_id: AKIDROUTER, secret_access_key: "${INGRESS_SECRET}"}
functions:
  orders: {invoker: python, handler: app:orders}
mappings:
  - name: order-events
    function: orders
    source: {type: eventbridge}
  - name: private-url
    function: orders
    source: {type: http, path: /private, methods: [POST], auth_type: AWS_IAM}
"""
SECRET = "router-secret-key"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("signed")
    with router_running(
        tmp,
        CONFIG,
        HANDLER,
        started="mapping private-url started",
        env={"INGRESS_SECRET": SECRET},
    ) as url:
        yield url, tmp


def _events(url: str, secret: str) -> object:
    return boto3.client(
        "events",
        endpoint_url=url,
        region_name="eu-west-1",
        aws_access_key_id="AKIDROUTER",
        aws_secret_access_key=secret,
    )


def test_put_events_signed_with_the_configured_key(signed: tuple[str, Path]) -> None:
    url, tmp = signed
    entry = {"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"n": 1})}
    answer = _events(url, SECRET).put_events(Entries=[entry])  # type: ignore[attr-defined]
    event_id = answer["Entries"][0]["EventId"]
    wait_for(
        lambda: [c for c in lines(tmp / "calls.jsonl") if c.get("id") == event_id],
        20,
        tmp / "router.log",
    )
    with pytest.raises(ClientError) as caught:
        _events(url, "wrong").put_events(Entries=[entry])  # type: ignore[attr-defined]
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_aws_iam_function_url_needs_a_signature(signed: tuple[str, Path]) -> None:
    url, _ = signed
    answer = requests.post(f"{url}/private", data=b"{}", timeout=10)
    assert answer.status_code == 403
    assert answer.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    request = AWSRequest(
        method="POST",
        url=f"{url}/private",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    SigV4Auth(Credentials("AKIDROUTER", SECRET), "lambda", "us-east-1").add_auth(request)
    answer = requests.post(
        f"{url}/private", data=b"{}", headers=dict(request.headers.items()), timeout=10
    )
    assert (answer.status_code, answer.text) == (200, "signed ok")
