"""Verifying AWS Signature Version 4 on requests to the ingress listener.

What an SDK or the AWS CLI sends (``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/
REGION/SERVICE/aws4_request, SignedHeaders=..., Signature=...`` with ``X-Amz-Date``) is checked
against the access keys of ``router.ingress.credentials``, the way AWS checks it:

- no ``Authorization`` header: 403 ``MissingAuthenticationTokenException``;
- a header that is not a SigV4 header: 400 ``IncompleteSignatureException``;
- an access key id that is not configured: 403 ``UnrecognizedClientException``;
- a signature that does not match, a request time more than 5 minutes away from the router's
  clock, or a credential scoped to another service or date: 403 ``InvalidSignatureException``.

The canonical request is built from the request as received: the path as sent, encoded once
more (as every AWS service but S3 does), the query pairs sorted, the signed headers with their
values trimmed, and the SHA-256 of the body (or ``X-Amz-Content-SHA256`` when the client sent
it). Any region is accepted: the router is one endpoint for whatever region a client is
configured for. Signing keys are derived once per key, day, region and service.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from multidict import CIMultiDictProxy

from router.ingress.errors import AwsError

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def missing_token() -> AwsError:
    return AwsError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")


def _invalid(message: str) -> AwsError:
    return AwsError(403, "InvalidSignatureException", message)


class SigV4Verifier:
    """Checks SigV4 signatures made with one of ``keys`` (access key id -> secret)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)
        self._signing_keys: dict[tuple[str, str, str, str], bytes] = {}

    def verify(
        self,
        *,
        method: str,
        raw_path: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        service: str = "",
        now: datetime | None = None,
    ) -> str:
        """The access key id that signed the request; raises :class:`AwsError` (as AWS
        words it) when the request is not signed with a configured key. ``raw_path`` is the
        path and query exactly as sent; ``service`` the signing name the route expects
        (empty: any)."""
        header = headers.get("Authorization")
        if not header:
            raise missing_token()
        match = _AUTH.match(header.strip())
        if match is None:
            raise AwsError(
                400,
                "IncompleteSignatureException",
                f"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                f"parameters of the {ALGORITHM} algorithm",
            )
        parts = match["credential"].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise AwsError(
                400,
                "IncompleteSignatureException",
                "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
            )
        key_id, day, region, scope_service, _ = parts
        secret = self._keys.get(key_id)
        if secret is None:
            raise AwsError(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        stamp = headers.get("X-Amz-Date", "")
        try:
            when = datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise AwsError(
                400,
                "IncompleteSignatureException",
                "the X-Amz-Date header is missing or not of the form YYYYMMDDTHHMMSSZ",
            ) from None
        current = now or datetime.now(UTC)
        if when < current - MAX_SKEW:
            raise _invalid(
                f"Signature expired: {stamp} is now earlier than "
                f"{(current - MAX_SKEW).strftime(_TIME_FORMAT)} "
                f"({current.strftime(_TIME_FORMAT)} - 5 min.)"
            )
        if when > current + MAX_SKEW:
            raise _invalid(
                f"Signature not yet current: {stamp} is still later than "
                f"{(current + MAX_SKEW).strftime(_TIME_FORMAT)} "
                f"({current.strftime(_TIME_FORMAT)} + 5 min.)"
            )
        if day != stamp[:8]:
            raise _invalid(
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                f"version of date from HTTP: '{day}' != '{stamp[:8]}'"
            )
        if service and scope_service != service:
            raise _invalid(f"Credential should be scoped to correct service: '{service}'. ")
        signed = match["signed"].lower().split(";")
        if "host" not in signed:
            raise _invalid("'Host' must be a 'SignedHeader' in the AWS Authorization.")
        canonical_headers = "".join(
            f"{name}:{','.join(' '.join(v.split()) for v in headers.getall(name, []))}\n"
            for name in signed
        )
        payload_hash = headers.get("X-Amz-Content-SHA256") or hashlib.sha256(body).hexdigest()
        path, _, query = raw_path.partition("?")
        key = self._signing_key(secret, key_id, day, region, scope_service)
        scope = f"{day}/{region}/{scope_service}/aws4_request"
        expected = match["signature"].lower()
        for canonical_query in _query_forms(query):
            canonical = "\n".join(
                (
                    method.upper(),
                    _canonical_path(path),
                    canonical_query,
                    canonical_headers,
                    match["signed"].lower(),
                    payload_hash,
                )
            )
            to_sign = "\n".join(
                (ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
            )
            signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(signature, expected):
                return key_id
        raise _invalid(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details."
        )

    def _signing_key(self, secret: str, key_id: str, day: str, region: str, service: str) -> bytes:
        cache_key = (key_id, day, region, service)
        key = self._signing_keys.get(cache_key)
        if key is None:
            if len(self._signing_keys) > 1024:
                self._signing_keys.clear()
            key = f"AWS4{secret}".encode()
            for part in (day, region, service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._signing_keys[cache_key] = key
        return key


def _canonical_path(path: str) -> str:
    """The path as sent, dot segments removed, encoded once more (as all services but S3)."""
    segments: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and not normalized.endswith("/"):
        normalized += "/"
    return quote(normalized or "/", safe="/~")


def _query_forms(query: str) -> list[str]:
    """The canonical query string: the pairs as sent, sorted (what botocore signs), and the
    pairs re-encoded as RFC 3986 says (what other signers send) when that differs."""
    if not query:
        return [""]
    pairs = [pair.partition("=")[::2] for pair in query.split("&") if pair]
    as_sent = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    encoded = "&".join(
        f"{k}={v}"
        for k, v in sorted(
            (quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")) for k, v in pairs
        )
    )
    return [as_sent] if encoded == as_sent else [as_sent, encoded]


__all__ = ["MAX_SKEW", "SigV4Verifier", "missing_token"]
