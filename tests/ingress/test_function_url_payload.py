"""The payload format 2.0 event and the answer to a function's result, table-driven."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.function_url.cors import CorsSettings
from connectors.function_url.payload import (
    HttpAnswer,
    HttpRequestView,
    InvalidResponse,
    answer_from_result,
    build_event,
    is_text,
    request_time,
)

SAMPLE = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures" / "events" / "function-url-event.json"
    ).read_text()
)


def _request(**changes: Any) -> HttpRequestView:
    values: dict[str, Any] = {
        "method": "GET",
        "raw_path": "/hello",
        "path": "/hello",
        "raw_query": "x=1&y=2",
        "headers": [
            ("Host", "127.0.0.1:9000"),
            ("User-Agent", "curl/8.0"),
            ("Accept", "*/*"),
            ("Cookie", "a=b"),
        ],
        "body": b"",
        "source_ip": "127.0.0.1",
        "protocol": "HTTP/1.1",
        "request_id": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "received": 1796126400.0,  # 2026-12-01T12:00:00Z
    }
    values.update(changes)
    return HttpRequestView(**values)


def test_the_event_is_the_sample_aws_documents() -> None:
    assert build_event(_request()) == SAMPLE


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # repeated headers are joined with commas, names lower-cased
        (
            {"headers": [("X-A", "1"), ("x-a", "2"), ("Host", "h")]},
            {"headers": {"x-a": "1,2", "host": "h"}},
        ),
        # cookies come out of the headers, split at ';', several Cookie lines joined
        (
            {"headers": [("Cookie", "a=1; b=2"), ("cookie", "c=3")]},
            {"cookies": ["a=1", "b=2", "c=3"], "headers": {}},
        ),
        # repeated query parameters joined with commas, values decoded, raw string kept
        (
            {"raw_query": "k=1&k=2&s=a%20b&e="},
            {
                "rawQueryString": "k=1&k=2&s=a%20b&e=",
                "queryStringParameters": {"k": "1,2", "s": "a b", "e": ""},
            },
        ),
        # no query: no queryStringParameters
        ({"raw_query": ""}, {"rawQueryString": "", "queryStringParameters": None}),
        # a text body as it is
        (
            {
                "method": "POST",
                "headers": [("Content-Type", "application/json; charset=utf-8")],
                "body": b'{"a": 1}',
            },
            {"body": '{"a": 1}', "isBase64Encoded": False},
        ),
        # binary (or no content type): base64
        (
            {"headers": [("Content-Type", "image/png")], "body": b"\x89PNG\x00"},
            {"body": base64.b64encode(b"\x89PNG\x00").decode(), "isBase64Encoded": True},
        ),
        ({"headers": [], "body": b"plain"}, {"body": "cGxhaW4=", "isBase64Encoded": True}),
        # text/* that is not UTF-8: base64
        (
            {"headers": [("Content-Type", "text/plain")], "body": b"\xff\xfe"},
            {"body": "//4=", "isBase64Encoded": True},
        ),
        # no body: no "body" key
        ({"body": b""}, {"body": None, "isBase64Encoded": False}),
        # pattern values
        ({"path_parameters": {"id": "7"}}, {"pathParameters": {"id": "7"}}),
    ],
)
def test_event_fields(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    event = build_event(_request(**changes))
    for key, value in expected.items():
        if value is None:
            assert key not in event
        elif key == "headers":
            assert event["headers"] == value
        else:
            assert event[key] == value


def test_request_context_http() -> None:
    context = build_event(_request(method="PUT", path="/a b", raw_path="/a%20b"))["requestContext"]
    assert context["http"] == {
        "method": "PUT",
        "path": "/a b",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "curl/8.0",
    }
    assert context["timeEpoch"] == 1796126400000
    assert context["time"] == "01/Dec/2026:12:00:00 +0000"


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("text/html", True),
        ("application/json", True),
        ("application/vnd.api+json", True),
        ("application/xml", True),
        ("application/x-www-form-urlencoded", True),
        ("application/octet-stream", False),
        ("image/png", False),
        ("", False),
        (None, False),
    ],
)
def test_text_types(content_type: str | None, text: bool) -> None:
    assert is_text(content_type) is text


def test_request_time_is_in_english_whatever_the_locale() -> None:
    assert request_time(1583953438.5) == "11/Mar/2020:19:03:58 +0000"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        # any JSON value without statusCode: a 200 JSON body
        (
            {"message": "hi"},
            HttpAnswer(
                status=200, headers=[("content-type", "application/json")], body=b'{"message":"hi"}'
            ),
        ),
        (
            "hello",
            HttpAnswer(status=200, headers=[("content-type", "application/json")], body=b'"hello"'),
        ),
        (
            [1, 2],
            HttpAnswer(status=200, headers=[("content-type", "application/json")], body=b"[1,2]"),
        ),
        (
            None,
            HttpAnswer(status=200, headers=[("content-type", "application/json")], body=b"null"),
        ),
        # statusCode: status, headers, cookies, body
        (
            {
                "statusCode": 201,
                "headers": {"Content-Type": "text/plain", "X-N": 3},
                "cookies": ["a=1; Path=/", "b=2"],
                "body": "made",
            },
            HttpAnswer(
                status=201,
                headers=[
                    ("Content-Type", "text/plain"),
                    ("X-N", "3"),
                    ("set-cookie", "a=1; Path=/"),
                    ("set-cookie", "b=2"),
                ],
                body=b"made",
            ),
        ),
        # a status alone: empty body, JSON content type
        (
            {"statusCode": 204},
            HttpAnswer(status=204, headers=[("content-type", "application/json")], body=b""),
        ),
        # binary bodies
        (
            {
                "statusCode": 200,
                "headers": {"content-type": "image/png"},
                "body": base64.b64encode(b"\x89PNG").decode(),
                "isBase64Encoded": True,
            },
            HttpAnswer(status=200, headers=[("content-type", "image/png")], body=b"\x89PNG"),
        ),
    ],
)
def test_answers(result: Any, expected: HttpAnswer) -> None:
    assert answer_from_result(result) == expected


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"statusCode": "abc"}, "statusCode must be an integer"),
        ({"statusCode": 99}, "statusCode must be an integer"),
        ({"statusCode": True}, "statusCode must be an integer"),
        ({"statusCode": 200, "headers": ["a"]}, "headers must be an object"),
        ({"statusCode": 200, "headers": {"a": [1]}}, "header values must be strings"),
        ({"statusCode": 200, "cookies": "a=1"}, "cookies must be a list"),
        ({"statusCode": 200, "body": {"a": 1}}, "body must be a string"),
        ({"statusCode": 200, "body": "%%", "isBase64Encoded": True}, "not base64"),
    ],
)
def test_invalid_answers(result: Any, message: str) -> None:
    with pytest.raises(InvalidResponse, match=message):
        answer_from_result(result)


CORS = CorsSettings.model_validate(
    {
        "AllowOrigins": ["https://shop.example"],
        "AllowMethods": ["get", "POST"],
        "AllowHeaders": ["x-custom"],
        "ExposeHeaders": ["x-total"],
        "MaxAge": 300,
        "AllowCredentials": True,
    }
)


def test_cors_preflight() -> None:
    request = {"origin": "https://shop.example", "access-control-request-method": "POST"}
    assert CORS.is_preflight("OPTIONS", request)
    assert not CORS.is_preflight("OPTIONS", {"origin": "https://shop.example"})
    assert CORS.preflight(request) == [
        ("access-control-allow-origin", "https://shop.example"),
        ("access-control-allow-methods", "GET,POST"),
        ("access-control-allow-headers", "x-custom"),
        ("access-control-allow-credentials", "true"),
        ("access-control-max-age", "300"),
        ("vary", "Origin"),
    ]
    assert CORS.preflight({**request, "origin": "https://evil.example"}) == []


def test_cors_replaces_the_functions_headers() -> None:
    answered = [("content-type", "text/plain"), ("Access-Control-Allow-Origin", "*")]
    assert CORS.apply(answered, "https://shop.example") == [
        ("content-type", "text/plain"),
        ("access-control-allow-origin", "https://shop.example"),
        ("access-control-expose-headers", "x-total"),
        ("access-control-allow-credentials", "true"),
        ("vary", "Origin"),
    ]
    assert CORS.apply(answered, "https://evil.example") == [("content-type", "text/plain")]
    anyone = CorsSettings.model_validate({"allow_origins": ["*"]})
    assert anyone.allowed_origin("https://x.example") == "*"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"MaxAge": 86401}, "less than or equal to 86400"),
        ({"AllowMethods": ["GET"] * 7}, "at most 6 items"),
        ({"AllowMethods": ["CONNECT1"]}, "1 to 6 characters"),
        ({"AllowOrigins": [""]}, "1 to 253 characters"),
        ({"Unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_cors_limits(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorsSettings.model_validate(settings)
