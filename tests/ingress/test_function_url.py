"""Function URLs (``type: http``) served by a ``router run`` process, called with a real HTTP
client: the event the function gets, and the HTTP answer to what it returns."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.procs import free_port
from tests.helpers import start_router_process, terminate

HANDLER = """\
import base64, json

def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode", "echo")
    if mode == "echo":
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps(event)}
    if mode == "made":
        return {"statusCode": 201, "headers": {"X-Made": "yes", "content-type": "text/plain"},
                "cookies": ["session=1; Path=/; HttpOnly", "theme=dark"], "body": "made"}
    if mode == "binary":
        return {"statusCode": 200, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(b"\\x89PNG\\r\\n\\x00\\xff").decode(),
                "isBase64Encoded": True}
    if mode == "plain":
        return ["any", "json", 1]
    if mode == "invalid":
        return {"statusCode": "teapot"}
    if mode == "cors":
        return {"statusCode": 200, "headers": {"Access-Control-Allow-Origin": "*"}, "body": "x"}
    raise ValueError("the function failed")
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:{port}
functions:
  orders: {{invoker: python, handler: app:handler}}
mappings:
  - name: hello-url
    function: orders
    source: {{type: http, path: /hello, methods: [GET, POST]}}
  - name: dup-1
    function: orders
    source: {{type: http, path: /dup, methods: [GET]}}
  - name: dup-2
    function: orders
    source: {{type: http, path: /dup, methods: [GET]}}
  - name: users-url
    function: orders
    source:
      type: http
      path: /users/{{id}}/{{rest+}}
      cors:
        AllowOrigins: [https://shop.example]
        AllowMethods: [GET, PUT]
        AllowHeaders: [x-custom]
        ExposeHeaders: [x-made]
        MaxAge: 600
"""


LOGS: dict[str, Path] = {}
"""The router's log by its URL."""


@pytest.fixture(scope="module")
def router_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("function-url")
    (tmp / "app.py").write_text(HANDLER)
    port = free_port()
    config = tmp / "router.yaml"
    config.write_text(CONFIG.format(port=port))
    log = tmp / "router.log"
    proc = start_router_process(config, f"sqlite:///{tmp / 'router.db'}", tmp, log)
    try:
        deadline = time.monotonic() + 30
        while "mapping users-url started" not in log.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"the router did not start:\n{log.read_text()}")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        LOGS[url] = log
        yield url
    finally:
        assert terminate(proc) == 0, log.read_text()


async def _call(
    method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, aiohttp.ClientResponse, bytes]:
    # The route is registered as the mapping's source starts: retry a 404 briefly.
    deadline = time.monotonic() + 10
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.request(method, url, data=data, headers=headers) as answer:
                body = await answer.read()
                if answer.status != 404 or time.monotonic() > deadline:
                    return answer.status, answer, body


async def test_the_function_gets_the_payload_format_2_event(router_url: str) -> None:
    status, answer, body = await _call(
        "GET",
        f"{router_url}/hello?mode=echo&x=1&x=2&y=a%20b",
        headers={"Cookie": "a=1; b=2", "X-Twice": "one", "User-Agent": "tests/1.0"},
    )
    assert status == 200, body
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/hello"
    assert event["rawQueryString"] == "mode=echo&x=1&x=2&y=a%20b"
    assert event["queryStringParameters"] == {"mode": "echo", "x": "1,2", "y": "a b"}
    assert event["cookies"] == ["a=1", "b=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-twice"] == "one"
    assert event["headers"]["host"] == router_url.removeprefix("http://")
    http = event["requestContext"]["http"]
    assert http == {
        "method": "GET",
        "path": "/hello",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "tests/1.0",
    }
    assert event["requestContext"]["requestId"] == answer.headers["x-amzn-RequestId"]
    assert abs(event["requestContext"]["timeEpoch"] / 1000 - time.time()) < 60
    assert event["isBase64Encoded"] is False
    assert "body" not in event
    sample = json.loads(
        (
            Path(__file__).resolve().parents[1] / "fixtures/events/function-url-event.json"
        ).read_text()
    )
    assert set(event) == set(sample)
    assert set(event["requestContext"]) == set(sample["requestContext"])


async def test_binary_and_text_bodies(router_url: str) -> None:
    raw = bytes(range(256))
    status, _, body = await _call(
        "POST",
        f"{router_url}/hello?mode=echo",
        data=raw,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 200, body
    event = json.loads(body)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw
    status, _, body = await _call(
        "POST",
        f"{router_url}/hello?mode=echo",
        data='{"é": 1}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    event = json.loads(body)
    assert (event["isBase64Encoded"], event["body"]) == (False, '{"é": 1}')


async def test_status_headers_cookies_and_binary_answers(router_url: str) -> None:
    status, answer, body = await _call("POST", f"{router_url}/hello?mode=made")
    assert (status, body) == (201, b"made")
    assert answer.headers["X-Made"] == "yes"
    assert answer.headers["Content-Type"] == "text/plain"
    assert answer.headers.getall("Set-Cookie") == ["session=1; Path=/; HttpOnly", "theme=dark"]
    status, answer, body = await _call("GET", f"{router_url}/hello?mode=binary")
    assert (status, body) == (200, b"\x89PNG\r\n\x00\xff")
    assert answer.headers["Content-Type"] == "image/png"
    status, answer, body = await _call("GET", f"{router_url}/hello?mode=plain")
    assert (status, json.loads(body)) == (200, ["any", "json", 1])
    assert answer.headers["Content-Type"] == "application/json"


async def test_function_errors_and_invalid_answers_are_502(router_url: str) -> None:
    for mode in ("fail", "invalid"):
        status, answer, body = await _call("GET", f"{router_url}/hello?mode={mode}")
        assert status == 502, body
        assert b"Internal Server Error" in body
        assert b"the function failed" not in body
        assert answer.headers["x-amzn-RequestId"]


async def test_methods_not_configured_are_not_served(router_url: str) -> None:
    status, answer, _ = await _call("DELETE", f"{router_url}/hello")
    assert status == 404
    assert answer.headers["x-amzn-ErrorType"] == "UnknownOperationException"


async def test_one_mapping_serves_a_path_another_one_names(router_url: str) -> None:
    status, _, body = await _call("GET", f"{router_url}/dup?mode=plain")
    assert status == 200, body
    text = LOGS[router_url].read_text()
    assert "GET /dup is served by mapping dup-" in text
    assert "(mapping stopped: fix its configuration)" in text


async def test_patterns_reach_the_function_as_path_parameters(router_url: str) -> None:
    status, _, body = await _call("GET", f"{router_url}/users/7/a/b?mode=echo")
    assert status == 200, body
    event = json.loads(body)
    assert event["pathParameters"] == {"id": "7", "rest": "a/b"}
    assert event["rawPath"] == "/users/7/a/b"


async def test_cors(router_url: str) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "x-custom",
    }
    status, answer, _ = await _call("OPTIONS", f"{router_url}/users/1/x", headers=preflight)
    assert status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert answer.headers["Access-Control-Allow-Methods"] == "GET,PUT"
    assert answer.headers["Access-Control-Allow-Headers"] == "x-custom"
    assert answer.headers["Access-Control-Max-Age"] == "600"
    status, answer, _ = await _call(
        "OPTIONS",
        f"{router_url}/users/1/x",
        headers={**preflight, "Origin": "https://evil.example"},
    )
    assert "Access-Control-Allow-Origin" not in answer.headers
    # The configured headers replace what the function answers.
    status, answer, body = await _call(
        "GET", f"{router_url}/users/1/x?mode=cors", headers={"Origin": "https://shop.example"}
    )
    assert (status, body) == (200, b"x")
    assert answer.headers.getall("Access-Control-Allow-Origin") == ["https://shop.example"]
    assert answer.headers["Access-Control-Expose-Headers"] == "x-made"
