"""Lambda's Invoke API against a real ``router run`` process, through boto3's ``lambda``
client (and the AWS CLI when it is installed): synchronous, asynchronous (queued, 202) and
dry runs, SigV4-signed with the configured keys and refused without them."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore import UNSIGNED
from botocore.config import Config

from tests.faults.harness import RouterProcess

KEY_ID = "AKIDINGRESSTEST"
SECRET = "ingress-test-secret"

APP = """\
import json, os, time

OUT = os.environ["INVOKE_OUT"]


def echo(event, context):
    custom = context.client_context.custom if context.client_context else None
    return {"event": event, "request_id": context.aws_request_id, "custom": custom}


def fail(event, context):
    raise ValueError("no such order")


def record(event, context):
    custom = context.client_context.custom if context.client_context else None
    line = {"event": event, "request_id": context.aws_request_id, "custom": custom}
    with open(OUT, "a") as f:
        f.write(json.dumps(line) + "\\n")
    if event.get("fail"):
        raise RuntimeError("asked to fail")


def big(event, context):
    return "x" * (7 * 1024 * 1024)
"""

CONFIG = """\
router:
  allow_plaintext_secrets: true
  ingress:
    listen: 127.0.0.1:0
    retry_delay_scale: 0.01
    credentials: {access_key_id: KEY_ID, secret_access_key: SECRET}
functions:
  echo: {invoker: python, handler: app:echo}
  fail: {invoker: python, handler: app:fail}
  record: {invoker: python, handler: app:record}
  big: {invoker: python, handler: app:big}
  once:
    invoker: python
    handler: app:record
    event_invoke_config:
      maximum_retry_attempts: 0
      maximum_event_age: 60
      destination_config:
        on_failure: {destination: "directory:./destinations"}
        on_success: {destination: "directory:./destinations"}
  twice:
    invoker: python
    handler: app:record
    EventInvokeConfig:
      MaximumRetryAttempts: 1
      DestinationConfig:
        OnFailure: {Destination: "directory:./destinations"}
  busy: {invoker: http, url: "BUSY_URL"}
mappings: []
""".replace("KEY_ID", KEY_ID).replace("SECRET", SECRET)


class _Busy(http.server.BaseHTTPRequestHandler):
    """A Lambda endpoint whose function has no concurrency left: 429 to every Invoke."""

    times: list[float] = []
    """When each Invoke came."""

    def do_POST(self) -> None:
        self.times.append(time.time())
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"message": "Rate Exceeded.", "Reason": "ConcurrentInvocationLimitExceeded"}
        )
        self.send_response(429)
        self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
        self.send_header("Retry-After", "3")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


class Router:
    def __init__(self, process: RouterProcess, url: str, out: Path) -> None:
        self.process = process
        self.url = url
        self.out = out

    def client(self, **kwargs: Any) -> Any:
        values: dict[str, Any] = {
            "endpoint_url": self.url,
            "region_name": "us-east-1",
            "aws_access_key_id": KEY_ID,
            "aws_secret_access_key": SECRET,
            "config": Config(retries={"max_attempts": 1}),
        }
        values.update(kwargs)
        return boto3.client("lambda", **values)

    def recorded(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]


def listener_url(process: RouterProcess) -> str:
    found = re.search(r"ingress listener on (http://127\.0\.0\.1:\d+)", process.log_text())
    assert found, process.log_text()
    return found.group(1)


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    workdir = tmp_path_factory.mktemp("invoke")
    with running(workdir, f"sqlite:///{workdir / 'router.db'}", CONFIG, APP) as router:
        yield router


@contextlib.contextmanager
def running(workdir: Path, store_url: str, config: str, app: str) -> Iterator[Router]:
    """``router run`` on ``config`` (``BUSY_URL`` replaced by an endpoint that throttles
    every Invoke) with ``app`` as ``app.py``; functions write to ``invocations.jsonl``."""
    busy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    busy_url = f"http://127.0.0.1:{busy.server_address[1]}"
    (workdir / "router.yaml").write_text(config.replace("BUSY_URL", busy_url))
    (workdir / "app.py").write_text(app)
    out = workdir / "invocations.jsonl"
    process = RouterProcess(workdir, store_url, env={"INVOKE_OUT": str(out)})
    process.start()
    try:
        yield Router(process, listener_url(process), out)
    finally:
        assert process.stop() == 0, process.log_text()
        busy.shutdown()
        busy.server_close()


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def error_of(info: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> tuple[int, str]:
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_a_synchronous_invoke_answers_the_functions_payload(router: Router) -> None:
    context = base64.b64encode(json.dumps({"custom": {"tenant": "t1"}}).encode()).decode()
    answer = router.client().invoke(
        FunctionName="echo", Payload=json.dumps({"order": 7}), ClientContext=context
    )
    assert answer["StatusCode"] == 200
    assert answer["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in answer
    payload = json.loads(answer["Payload"].read())
    assert payload["event"] == {"order": 7}
    assert payload["custom"] == {"tenant": "t1"}
    assert payload["request_id"] == answer["ResponseMetadata"]["RequestId"]


def test_a_function_error_is_a_200_with_the_error(router: Router) -> None:
    answer = router.client().invoke(FunctionName="fail", Payload=b"{}")
    assert answer["StatusCode"] == 200
    assert answer["FunctionError"] == "Unhandled"
    payload = json.loads(answer["Payload"].read())
    assert payload["errorType"] == "ValueError"
    assert payload["errorMessage"] == "no such order"


def test_functions_are_found_by_name_arn_and_partial_arn(router: Router) -> None:
    client = router.client()
    for name in (
        "arn:aws:lambda:us-east-1:000000000000:function:echo",
        "000000000000:function:echo",
        "echo:$LATEST",
    ):
        assert client.invoke(FunctionName=name, Payload=b"1")["StatusCode"] == 200


def test_refusals_have_lambdas_codes(router: Router) -> None:
    client = router.client()
    cases: list[tuple[dict[str, Any], tuple[int, str]]] = [
        ({"FunctionName": "nope"}, (404, "ResourceNotFoundException")),
        ({"FunctionName": "echo", "Qualifier": "7"}, (404, "ResourceNotFoundException")),
        (
            {"FunctionName": "echo", "Payload": b"{not json"},
            (400, "InvalidRequestContentException"),
        ),
        (
            {"FunctionName": "echo", "ClientContext": "not base64!"},
            (400, "InvalidRequestContentException"),
        ),
        (
            {"FunctionName": "echo", "Payload": b'"' + b"x" * (6 * 1024 * 1024) + b'"'},
            (413, "RequestTooLargeException"),
        ),
        (
            {
                "FunctionName": "record",
                "InvocationType": "Event",
                "Payload": b'"' + b"x" * (1024 * 1024) + b'"',
            },
            (413, "RequestTooLargeException"),
        ),
    ]
    for kwargs, expected in cases:
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client.invoke(**kwargs)
        assert error_of(info) == expected, kwargs
    with pytest.raises(client.exceptions.ResourceNotFoundException, match="function:nope"):
        client.invoke(FunctionName="nope")
    assert router.recorded() == []  # nothing refused was queued


def test_a_throttled_function_answers_429_too_many_requests(router: Router) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        router.client().invoke(FunctionName="busy", Payload=b"{}")
    assert error_of(info) == (429, "TooManyRequestsException")
    response = info.value.response
    assert response["Error"]["Message"] == "Rate Exceeded."
    assert response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "3"


def test_a_response_larger_than_6_mb_is_a_function_error(router: Router) -> None:
    answer = router.client().invoke(FunctionName="big")
    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"


def test_a_dry_run_checks_and_invokes_nothing(router: Router) -> None:
    client = router.client()
    answer = client.invoke(FunctionName="record", InvocationType="DryRun", Payload=b"{}")
    assert answer["StatusCode"] == 204
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName="nope", InvocationType="DryRun")
    time.sleep(0.3)
    assert router.recorded() == []


def test_an_asynchronous_invoke_is_queued_then_delivered(router: Router) -> None:
    context = base64.b64encode(json.dumps({"custom": {"k": "v"}}).encode()).decode()
    answer = router.client().invoke(
        FunctionName="record",
        InvocationType="Event",
        Payload=json.dumps({"id": "async-1"}),
        ClientContext=context,
    )
    assert answer["StatusCode"] == 202
    assert answer["Payload"].read() == b""
    request_id = answer["ResponseMetadata"]["RequestId"]
    lines = wait_for(lambda: [r for r in router.recorded() if r["event"] == {"id": "async-1"}])
    assert lines == [{"event": {"id": "async-1"}, "request_id": request_id, "custom": {"k": "v"}}]


def test_a_failing_asynchronous_invoke_is_tried_three_times(router: Router) -> None:
    answer = router.client().invoke(
        FunctionName="record", InvocationType="Event", Payload=json.dumps({"fail": "f-1"})
    )
    request_id = answer["ResponseMetadata"]["RequestId"]
    wait_for(lambda: len([r for r in router.recorded() if r["event"] == {"fail": "f-1"}]) == 3)
    time.sleep(0.5)
    tries = [r for r in router.recorded() if r["event"] == {"fail": "f-1"}]
    # Three attempts (two retries), under the one request id, as Lambda does.
    assert [r["request_id"] for r in tries] == [request_id] * 3


def destination_records(router: Router, function: str) -> list[dict[str, Any]]:
    folder = router.out.parent / "destinations" / function
    if not folder.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def test_the_functions_event_invoke_config_sets_retries_and_destinations(router: Router) -> None:
    client = router.client()
    failed = client.invoke(
        FunctionName="once", InvocationType="Event", Payload=json.dumps({"fail": "once-1"})
    )
    done = client.invoke(
        FunctionName="once", InvocationType="Event", Payload=json.dumps({"id": "once-2"})
    )
    assert failed["StatusCode"] == done["StatusCode"] == 202
    records = wait_for(
        lambda: (
            len(destination_records(router, "once")) == 2 and destination_records(router, "once")
        )
    )
    by_condition = {r["requestContext"]["condition"]: r for r in records}
    failure, success = by_condition["RetriesExhausted"], by_condition["Success"]
    # maximum_retry_attempts 0: one attempt, then the on-failure record, as Lambda writes it.
    assert [r["event"] for r in router.recorded()].count({"fail": "once-1"}) == 1
    assert failure["requestContext"] == {
        "requestId": failed["ResponseMetadata"]["RequestId"],
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:once",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 1,
    }
    assert failure["requestPayload"] == {"fail": "once-1"}
    assert failure["responseContext"]["functionError"] == "Unhandled"
    assert failure["responsePayload"]["errorMessage"] == "asked to fail"
    assert failure["version"] == "1.0"
    assert success["requestContext"]["requestId"] == done["ResponseMetadata"]["RequestId"]
    assert success["requestContext"]["approximateInvokeCount"] == 1
    assert success["requestPayload"] == {"id": "once-2"}
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"] is None


def test_event_invoke_config_in_aws_spelling(router: Router) -> None:
    answer = router.client().invoke(
        FunctionName="twice", InvocationType="Event", Payload=json.dumps({"fail": "twice-1"})
    )
    (record,) = wait_for(lambda: destination_records(router, "twice"))
    # MaximumRetryAttempts 1: two attempts under the Invoke's request id.
    assert [r["request_id"] for r in router.recorded() if r["event"] == {"fail": "twice-1"}] == [
        answer["ResponseMetadata"]["RequestId"]
    ] * 2
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2


def test_unsigned_and_badly_signed_requests_are_refused(router: Router) -> None:
    unsigned = router.client(config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        unsigned.invoke(FunctionName="record", InvocationType="Event", Payload=b'{"id": "u"}')
    assert error_of(info) == (403, "MissingAuthenticationTokenException")
    wrong = router.client(aws_secret_access_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        wrong.invoke(FunctionName="record", InvocationType="Event", Payload=b'{"id": "w"}')
    assert error_of(info) == (403, "InvalidSignatureException")
    stranger = router.client(aws_access_key_id="AKIDSTRANGER")
    with pytest.raises(botocore.exceptions.ClientError) as info:
        stranger.invoke(FunctionName="echo")
    assert error_of(info) == (403, "UnrecognizedClientException")
    time.sleep(0.5)
    assert [r for r in router.recorded() if r["event"] in ({"id": "u"}, {"id": "w"})] == []


def aws_cli() -> str | None:
    found = shutil.which("aws")
    if found:
        return found
    beside = Path(sys.executable).parent / "aws"
    return str(beside) if beside.exists() else None


def test_the_aws_cli_invokes_synchronously_and_asynchronously(
    router: Router, tmp_path: Path
) -> None:
    cli = aws_cli()
    if cli is None:
        pytest.skip("the AWS CLI is not installed (pip install awscli)")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    out = tmp_path / "out.json"
    base = [cli, "lambda", "invoke", "--endpoint-url", router.url]
    event = ["--payload", '{"cli": 2}']
    done = subprocess.run(
        [*base, "--function-name", "echo", "--payload", '{"cli": 1}', str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["StatusCode"] == 200
    assert json.loads(out.read_text())["event"] == {"cli": 1}
    done = subprocess.run(
        [*base, "--function-name", "record", "--invocation-type", "Event", *event, str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["StatusCode"] == 202
    wait_for(lambda: [r for r in router.recorded() if r["event"] == {"cli": 2}])
    done = subprocess.run(
        [*base, "--function-name", "nope", str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ResourceNotFoundException" in done.stderr
