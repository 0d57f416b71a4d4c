"""Redis stream entries as records and events (pure), the source's settings, and the
configuration of the README's example."""

from __future__ import annotations

import base64

import pytest

from connectors.redis.records import Entry, build_event, filter_viewer, record_converter
from connectors.redis.settings import RedisSourceSettings
from connectors.redis.source import group_start
from router.config import load_config_text
from router.errors import ConfigErrors
from router.filters.spec import RawText


def test_lanes_by_stream_and_by_key_field() -> None:
    entries = [
        (b"1-0", {b"data": b"{}", b"k": b"a"}),
        (b"1-1", {b"data": b"{}"}),
        (b"2-0", None),  # trimmed while pending
    ]
    one = record_converter(1, None)("s", entries)
    assert [r.lane for r in one] == [("s",), ("s",)]
    assert [r.position for r in one] == ["1-0", "1-1"]
    assert [r.identifier for r in one] == ["1-0", "1-1"]
    assert one[0].arrival == 0.001
    spread = record_converter(4, "k")("s", entries)
    assert spread[1].lane == ("s", 0)  # no key field: slot 0
    assert spread[0].lane in {("s", slot) for slot in range(4)}


def test_event_and_filter_view() -> None:
    fields = {b"data": b'{"a": 1}', b"kind": b"x", b"\xff": b"\x01"}
    records = record_converter(1, None)("orders", [(b"1700000000000-3", fields)])
    event = build_event("redis://h:6379/0", "g", b"data", records)
    assert event == {
        "eventSource": "redis:streams",
        "url": "redis://h:6379/0",
        "group": "g",
        "records": {
            "orders": [
                {
                    "stream": "orders",
                    "id": "1700000000000-3",
                    "timestamp": 1700000000000,
                    "fields": {"kind": "x"},
                    "binaryFields": {"/w==": "AQ=="},
                    "data": base64.b64encode(b'{"a": 1}').decode(),
                }
            ]
        },
    }
    assert filter_viewer(b"data", frozenset({"data"}))(records[0]) == {"data": {"a": 1}}
    full = filter_viewer(b"data", None)(records[0])
    assert full["data"] == {"a": 1} and full["fields"] == {"kind": "x"}
    text = record_converter(1, None)("o", [(b"1-0", {b"data": b"plain"})])
    assert filter_viewer(b"data", None)(text[0])["data"] == RawText("plain")
    assert Entry("o", "1-0", {}).stream == "o"


def test_group_start_positions() -> None:
    assert group_start("TRIM_HORIZON", None) == "0"
    assert group_start("LATEST", None) == "$"
    assert group_start("AT_TIMESTAMP", 1000) == "999-18446744073709551615"


def test_settings_refuse_a_password_in_the_url() -> None:
    with pytest.raises(ValueError, match=r"password: \$\{NAME\}"):
        RedisSourceSettings(url="redis://u:pw@h:6379/0", streams=["s"])
    ok = RedisSourceSettings.model_validate({"url": "rediss://u@h:6380/1", "streams": "a, b"})
    assert ok.streams == ["a", "b"] and ok.tls and ok.address == "rediss://h:6380/1"


def test_the_documented_mapping_loads() -> None:
    config = load_config_text(
        """
functions:
  f: {invoker: python, handler: app:handle}
mappings:
  - name: rs
    function: f
    source: {type: redis, url: "redis://127.0.0.1:6379/0", streams: [orders]}
    starting_position: TRIM_HORIZON
""",
        "c.yaml",
    )
    (mapping,) = config.mappings
    assert mapping.source.type == "redis"
    assert mapping.starting_position == "TRIM_HORIZON"
    assert mapping.batch_size == 100


def test_parallelization_without_key_field_is_refused_at_its_line() -> None:
    with pytest.raises(ConfigErrors, match=r"c.yaml:\d+: .*parallelization_factor.*key_field"):
        load_config_text(
            """
functions:
  f: {invoker: python, handler: app:handle}
mappings:
  - name: rs
    function: f
    parallelization_factor: 2
    source: {type: redis, url: "redis://127.0.0.1:6379/0", streams: [orders]}
""",
            "c.yaml",
        )
