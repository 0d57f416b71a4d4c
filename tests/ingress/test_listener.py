"""The ingress listener over real HTTP: routes front-ends register and remove while it runs,
AWS's error shapes, body limits checked before reading, SigV4 verified with botocore's own
signer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import yarl
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from router.config.convert import IngressCredential, IngressSettings
from router.errors import ConfigError, SetupError
from router.ingress import AwsError, IngressListener, IngressRequest, json_error
from router.secrets import Secret

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


async def echo(request: IngressRequest) -> web.Response:
    return web.json_response(
        {
            "params": dict(request.params),
            "body": request.body.decode(),
            "key": request.access_key_id,
        }
    )


async def refuse(request: IngressRequest) -> web.Response:
    raise AwsError(429, "TooManyRequestsException", "Rate Exceeded.", extra={"Reason": "X"})


async def crash(request: IngressRequest) -> web.Response:
    raise RuntimeError("secret internals")


@pytest.fixture
async def listener() -> AsyncIterator[IngressListener]:
    async with IngressListener(IngressSettings(listen="127.0.0.1:0")) as running:
        yield running


@pytest.fixture
async def signed_listener() -> AsyncIterator[IngressListener]:
    settings = IngressSettings(
        listen="127.0.0.1:0",
        credentials=(IngressCredential(access_key_id=KEY_ID, secret_access_key=Secret(SECRET)),),
    )
    async with IngressListener(settings) as running:
        yield running


async def call(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    # encoded=True: sent exactly as given (as botocore's urllib3 sends what it signed).
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, yarl.URL(url, encoded=True), data=body, headers=headers or {}
        ) as response,
    ):
        raw = await response.read()
        payload = orjson.loads(raw) if raw and raw[:1] in b"{[" else raw
        return response.status, dict(response.headers), payload


def signed_headers(
    url: str,
    body: bytes,
    *,
    key_id: str = KEY_ID,
    secret: str = SECRET,
    service: str = "lambda",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """What botocore sends: its own SigV4 signer over the request."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(key_id, secret), service, "us-east-1").add_auth(request)
    return dict(request.headers.items())


async def test_routes_come_and_go_while_the_listener_runs(listener: IngressListener) -> None:
    url = listener.url
    assert url.startswith("http://127.0.0.1:")
    status, headers, body = await call("POST", f"{url}/hooks/a")
    assert status == 404
    assert headers["x-amzn-ErrorType"] == "UnknownOperationException"
    assert body["Type"] == "User"
    assert "x-amzn-RequestId" in headers

    registration = listener.add_route(["POST"], "/hooks/a", echo, owner="mapping a")
    pattern = listener.add_route(
        "POST", "/2015-03-31/functions/{name}/invocations", echo, owner="invoke"
    )
    rest = listener.add_route("GET", "/files/{key+}", echo, owner="files")
    status, headers, body = await call("POST", f"{url}/hooks/a", b"hi")
    assert (status, body["body"], body["key"]) == (200, "hi", None)
    status, _, body = await call("POST", f"{url}/2015-03-31/functions/my%3Afn/invocations")
    assert body["params"] == {"name": "my:fn"}
    status, _, body = await call("GET", f"{url}/files/a/b/c.txt")
    assert body["params"] == {"key": "a/b/c.txt"}
    # Another method at the same path is not served.
    status, _, _ = await call("GET", f"{url}/hooks/a")
    assert status == 404

    registration.remove()
    registration.remove()  # idempotent
    status, _, _ = await call("POST", f"{url}/hooks/a")
    assert status == 404
    pattern.remove()
    rest.remove()


async def test_a_path_served_twice_is_a_configuration_error(listener: IngressListener) -> None:
    with listener.add_route("POST", "/hooks/a", echo, owner="mapping a"):
        with pytest.raises(ConfigError, match="POST /hooks/a is served by mapping a already"):
            listener.add_route(["GET", "POST"], "/hooks/a", echo, owner="mapping b")
        # GET was not registered half-way either.
        status, _, _ = await call("GET", f"{listener.url}/hooks/a")
        assert status == 404
    with listener.add_route("POST", "/hooks/a", echo, owner="mapping b"):
        pass


async def test_json_actions_by_target(listener: IngressListener) -> None:
    with listener.add_target("AWSEvents.PutEvents", echo, owner="bus"):
        status, _, body = await call(
            "POST", f"{listener.url}/", b"{}", {"X-Amz-Target": "AWSEvents.PutEvents"}
        )
        assert status == 200
        status, _, body = await call(
            "POST", f"{listener.url}/", b"{}", {"X-Amz-Target": "AWSEvents.PutRule"}
        )
        assert status == 400
        assert body["__type"] == "UnknownOperationException"
        with pytest.raises(ConfigError, match="served by bus already"):
            listener.add_target("AWSEvents.PutEvents", echo, owner="other")


async def test_errors_in_the_routes_format_and_never_a_traceback(
    listener: IngressListener,
) -> None:
    listener.add_route("POST", "/refuse", refuse, owner="t")
    listener.add_route("POST", "/crash", crash, owner="t", errors=json_error)
    status, headers, body = await call("POST", f"{listener.url}/refuse")
    assert status == 429
    assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
    assert body == {"Type": "User", "message": "Rate Exceeded.", "Reason": "X"}
    status, headers, body = await call("POST", f"{listener.url}/crash")
    assert status == 500
    assert body["__type"] == "ServiceException"
    assert "secret internals" not in str(body) and "Traceback" not in str(body)


async def test_an_oversized_body_is_refused_before_the_handler(listener: IngressListener) -> None:
    seen: list[bytes] = []

    async def record(request: IngressRequest) -> web.Response:
        seen.append(request.body)
        return web.Response(status=202)

    listener.add_route("POST", "/small", record, owner="t", max_body=1000)
    status, headers, _ = await call("POST", f"{listener.url}/small", b"x" * 1001)
    assert status == 413
    assert headers["x-amzn-ErrorType"] == "RequestTooLargeException"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(20):
            yield b"y" * 100

    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{listener.url}/small", data=chunks()) as response,
    ):
        assert response.status == 413
    status, _, _ = await call("POST", f"{listener.url}/small", b"x" * 1000)
    assert status == 202
    assert seen == [b"x" * 1000]


async def test_sigv4_signed_by_botocore_is_accepted(signed_listener: IngressListener) -> None:
    listener = signed_listener
    listener.add_route(
        "POST", "/2015-03-31/functions/{name}/invocations", echo, owner="t", service="lambda"
    )
    for name in ("orders", "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aorders"):
        url = f"{listener.url}/2015-03-31/functions/{name}/invocations?Qualifier=%24LATEST"
        body = b'{"hello": "world"}'
        status, _, answer = await call("POST", url, body, signed_headers(url, body))
        assert status == 200, answer
        assert answer["key"] == KEY_ID


async def test_sigv4_refusals_as_aws_words_them(signed_listener: IngressListener) -> None:
    listener = signed_listener
    reached: list[bytes] = []

    async def handler(request: IngressRequest) -> web.Response:
        reached.append(request.body)
        return web.Response(status=202)

    listener.add_route("POST", "/f", handler, owner="t", service="lambda")
    url = f"{listener.url}/f"
    body = b'{"a": 1}'

    status, headers, _ = await call("POST", url, body)
    assert (status, headers["x-amzn-ErrorType"]) == (403, "MissingAuthenticationTokenException")

    status, headers, answer = await call(
        "POST", url, body, signed_headers(url, body, key_id="AKIDUNKNOWN")
    )
    assert (status, headers["x-amzn-ErrorType"]) == (403, "UnrecognizedClientException")
    assert answer["message"] == "The security token included in the request is invalid."

    status, headers, answer = await call(
        "POST", url, body, signed_headers(url, body, secret="wrong")
    )
    assert (status, headers["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
    assert answer["message"].startswith("The request signature we calculated does not match")

    tampered = signed_headers(url, body)
    status, headers, _ = await call("POST", url, b'{"a": 2}', tampered)
    assert (status, headers["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")

    status, headers, answer = await call(
        "POST", url, body, signed_headers(url, body, service="events")
    )
    assert (status, headers["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")
    assert "scoped to correct service: 'lambda'" in answer["message"]

    status, headers, _ = await call(
        "POST", url, body, {"Authorization": "Bearer token", "X-Amz-Date": "20260101T000000Z"}
    )
    assert (status, headers["x-amzn-ErrorType"]) == (400, "IncompleteSignatureException")
    assert reached == []


async def test_sigv4_too_old_is_expired(signed_listener: IngressListener) -> None:
    from router.ingress.sigv4 import SigV4Verifier

    url = f"{signed_listener.url}/f"
    headers = signed_headers(url, b"")
    verifier = SigV4Verifier({KEY_ID: SECRET})
    later = datetime.now(UTC) + timedelta(minutes=6)
    from multidict import CIMultiDict, CIMultiDictProxy

    proxy = CIMultiDictProxy(CIMultiDict({**headers, "Host": url.split("/")[2]}))
    with pytest.raises(AwsError, match="Signature expired"):
        verifier.verify(method="POST", raw_path="/f", headers=proxy, body=b"", now=later)
    assert verifier.verify(method="POST", raw_path="/f", headers=proxy, body=b"") == KEY_ID


async def test_unsigned_routes_skip_the_check(signed_listener: IngressListener) -> None:
    signed_listener.add_route("POST", "/sns/alerts", echo, owner="sns", signed=False)
    status, _, _ = await call("POST", f"{signed_listener.url}/sns/alerts", b"{}")
    assert status == 200


async def test_a_port_in_use_says_how_to_choose_another(listener: IngressListener) -> None:
    taken = listener.url.rsplit(":", 1)[1]
    with pytest.raises(SetupError, match=r"router\.ingress\.listen"):
        async with IngressListener(IngressSettings(listen=f"127.0.0.1:{taken}")):
            pass
