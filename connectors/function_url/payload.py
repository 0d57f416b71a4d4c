"""The payload format 2.0 event of a function URL, and the HTTP answer to a function's
result, as Lambda builds them (pure: no I/O).

The request side (:func:`build_event`) takes what the listener saw of a request
(:class:`HttpRequestView`), so it can be tested with tables of requests and expected events.
The response side (:func:`answer_from_result`) turns a function's return value into an
:class:`HttpAnswer`:

- a dict with ``statusCode``: that status, its ``headers``, ``cookies`` (one
  ``Set-Cookie`` each) and ``body`` (base64-decoded when ``isBase64Encoded``);
  ``content-type`` defaults to ``application/json``;
- anything else (a dict without ``statusCode``, a list, a string, a number, null): 200 with
  ``content-type: application/json`` and the value as JSON in the body.

A result Lambda would not accept (a ``statusCode`` that is no integer from 100 to 599,
``headers`` that is no object, a ``body`` that is no string, ``isBase64Encoded`` with a body
that is no base64) raises :class:`InvalidResponse`; the source answers 502 as Lambda does.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from router.models import ACCOUNT_ID

ROUTE_KEY = "$default"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TEXT_TYPES = (
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/yaml",
    "application/x-yaml",
    "application/graphql",
)


class InvalidResponse(ValueError):
    """A function result that is no valid function URL response."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequestView:
    """What the event is built from: the request as it arrived."""

    method: str
    raw_path: str
    """The path as sent, without the query (percent-encoding kept)."""
    path: str
    """The path, percent-decoded."""
    raw_query: str
    headers: Sequence[tuple[str, str]]
    """Every header line in order, names as sent."""
    body: bytes
    source_ip: str
    protocol: str
    """``HTTP/1.1``"""
    request_id: str
    received: float
    """Epoch seconds."""
    account_id: str = ACCOUNT_ID
    api_id: str = "router"
    path_parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpAnswer:
    status: int
    headers: Sequence[tuple[str, str]]
    """In order; ``Set-Cookie`` once per cookie."""
    body: bytes


def is_text(content_type: str | None) -> bool:
    """Whether Lambda passes a body of this type as text (else base64)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return (
        kind.startswith("text/")
        or kind in _TEXT_TYPES
        or kind.endswith("+json")
        or kind.endswith("+xml")
    )


def request_time(epoch: float) -> str:
    """``12/Mar/2020:19:03:58 +0000`` (English month names whatever the locale)."""
    t = time.gmtime(epoch)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def build_event(request: HttpRequestView) -> dict[str, Any]:
    """The payload format 2.0 event Lambda gives a function behind a function URL."""
    cookies: list[str] = []
    header_pairs: list[tuple[str, str]] = []
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        else:
            header_pairs.append((lowered, value))
    headers = _joined(header_pairs)
    host = headers.get("host", "")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": ROUTE_KEY,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if request.raw_query:
        event["queryStringParameters"] = _joined(
            parse_qsl(request.raw_query, keep_blank_values=True)
        )
    event["requestContext"] = {
        "accountId": request.account_id,
        "apiId": request.api_id,
        "domainName": host,
        "domainPrefix": host.split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request.request_id,
        "routeKey": ROUTE_KEY,
        "stage": "$default",
        "time": request_time(request.received),
        "timeEpoch": int(request.received * 1000),
    }
    if request.path_parameters:
        event["pathParameters"] = dict(request.path_parameters)
    encoded = False
    if request.body:
        text = None
        if is_text(headers.get("content-type")):
            try:
                text = request.body.decode()
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(request.body).decode("ascii")
            encoded = True
        else:
            event["body"] = text
    event["isBase64Encoded"] = encoded
    return event


def answer_from_result(result: Any) -> HttpAnswer:
    """The HTTP answer to a function's result (see the module's docstring)."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return HttpAnswer(
            status=200,
            headers=[("content-type", "application/json")],
            body=orjson.dumps(result),
        )
    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise InvalidResponse(f"statusCode must be an integer from 100 to 599, got {status!r}")
    raw_headers = result.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise InvalidResponse("headers must be an object of header names to values")
    headers = [(str(k), _header_value(v)) for k, v in raw_headers.items()]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    raw_cookies = result.get("cookies") or []
    if not isinstance(raw_cookies, list) or not all(isinstance(c, str) for c in raw_cookies):
        raise InvalidResponse("cookies must be a list of strings")
    headers.extend(("set-cookie", c) for c in raw_cookies)
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        raise InvalidResponse(f"body must be a string, got {type(body).__name__}")
    elif result.get("isBase64Encoded") is True:
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as e:
            raise InvalidResponse("isBase64Encoded is true but body is not base64") from e
    else:
        data = body.encode()
    return HttpAnswer(status=status, headers=headers, body=data)


def _header_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise InvalidResponse(f"header values must be strings, got {type(value).__name__}")


__all__ = [
    "ROUTE_KEY",
    "HttpAnswer",
    "HttpRequestView",
    "InvalidResponse",
    "answer_from_result",
    "build_event",
    "is_text",
    "request_time",
]
