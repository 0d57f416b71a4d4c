"""S3 event records in AWS's exact shape (pure: no AWS library), shared by the ``s3`` source
(notifications from S3 or an emulator, bucket polling) and the ``directory`` source."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

PLACEHOLDER_PRINCIPAL = "EXAMPLE"


def encode_key(key: str) -> str:
    """An object key as S3 writes it into events: URL-encoded, spaces as ``+``, ``/`` kept."""
    return quote_plus(key, safe="/")


def _event_time(value: Any) -> datetime:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            # S3 writes UTC with "Z"; a time without a zone (moto) is the sender's local time.
            return datetime.fromisoformat(value).astimezone(UTC)
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """ISO 8601 with milliseconds and ``Z``, as in S3 events."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _request_ids(seed: str) -> dict[str, str]:
    digest = hashlib.sha256(seed.encode()).digest()
    return {
        "x-amz-request-id": digest[:8].hex().upper(),
        "x-amz-id-2": base64.b64encode(digest + digest[:16]).decode("ascii"),
    }


def normalise(record: dict[str, Any], seed: str) -> dict[str, Any]:
    """An S3 event record in AWS's shape and key order.

    Emulators leave out ``userIdentity``, ``requestParameters``, ``responseElements``,
    ``bucket.ownerIdentity`` and ``object.sequencer``, write times without ``Z`` and
    URL-encode ``/`` in keys. Missing fields are filled (placeholder principal, 127.0.0.1,
    request ids derived from ``seed``, a sequencer from the event time); what is present is
    kept as it is."""
    moment = _event_time(record.get("eventTime"))
    s3 = record.get("s3") or {}
    bucket = s3.get("bucket") or {}
    obj = s3.get("object") or {}
    name = bucket.get("name", "")
    out_bucket = {
        "name": name,
        "ownerIdentity": bucket.get("ownerIdentity") or {"principalId": PLACEHOLDER_PRINCIPAL},
        "arn": bucket.get("arn") or f"arn:aws:s3:::{name}",
    }
    out_object: dict[str, Any] = {"key": encode_key(unquote_plus(str(obj.get("key", ""))))}
    if "size" in obj:
        out_object["size"] = obj["size"]
    if "eTag" in obj:
        out_object["eTag"] = str(obj["eTag"]).strip('"')
    if obj.get("versionId"):
        out_object["versionId"] = obj["versionId"]
    out_object["sequencer"] = obj.get("sequencer") or f"{int(moment.timestamp() * 1e9):X}"
    out_object.update((k, v) for k, v in obj.items() if k not in out_object)
    out_s3: dict[str, Any] = {
        "s3SchemaVersion": s3.get("s3SchemaVersion", "1.0"),
        "configurationId": s3.get("configurationId", ""),
        "bucket": out_bucket,
        "object": out_object,
    }
    out_s3.update((k, v) for k, v in s3.items() if k not in out_s3)
    out: dict[str, Any] = {
        "eventVersion": record.get("eventVersion", "2.1"),
        "eventSource": "aws:s3",
        "awsRegion": record.get("awsRegion", ""),
        "eventTime": format_time(moment),
        "eventName": record.get("eventName", ""),
        "userIdentity": record.get("userIdentity") or {"principalId": PLACEHOLDER_PRINCIPAL},
        "requestParameters": record.get("requestParameters") or {"sourceIPAddress": "127.0.0.1"},
        "responseElements": record.get("responseElements") or _request_ids(seed),
        "s3": out_s3,
    }
    out.update((k, v) for k, v in record.items() if k not in out)
    return out
