"""Lambda's retry timing for asynchronous Invoke calls, through boto3's ``lambda`` client
against a real ``router run`` process on SQLite and on PostgreSQL: function errors retried 1
then 2 minutes apart, throttles backed off from 1 s until the event's age runs out, then the
on-failure destination (all durations scaled by ``router.ingress.retry_delay_scale``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator

import pytest

from router.store.migrate import upgrade
from tests.fixtures.postgres import create_pg_database, drop_pg_database, pg_database_url
from tests.ingress.test_invoke import Router, _Busy, destination_records, running, wait_for

SCALE = 0.01
"""The configuration's ``retry_delay_scale``."""
SLACK = 0.005
"""A wait ends no earlier than asked, up to the clocks' resolution."""

APP = """\
import json, os, time


def timed(event, context):
    with open(os.environ["INVOKE_OUT"], "a") as f:
        f.write(json.dumps({"event": event, "at": time.time()}) + "\\n")
    raise RuntimeError("asked to fail")
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:0
    queue: {poll_interval: 0.2}
    retry_delay_scale: 0.01     # Lambda's 1 and 2 minutes: 0.6 s and 1.2 s
functions:
  timed:
    invoker: python
    handler: app:timed
    event_invoke_config:
      destination_config:
        on_failure: {destination: "directory:./destinations"}
  busy:
    invoker: http
    url: "BUSY_URL"
    event_invoke_config:
      maximum_event_age: 60     # 0.6 s
      destination_config:
        on_failure: {destination: "directory:./destinations"}
mappings: []
"""


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def router(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    workdir = tmp_path_factory.mktemp(f"retry-timing-{request.param}")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'router.db'}"
    else:
        try:
            database = asyncio.run(create_pg_database())
        except (OSError, TimeoutError) as e:
            pytest.skip(f"PostgreSQL is not reachable ({e!r})")
        url = pg_database_url(database)
        upgrade(url)
    try:
        with running(workdir, url, CONFIG, APP) as started:
            yield started
    finally:
        if database is not None:
            asyncio.run(drop_pg_database(database))


def test_function_errors_are_retried_after_one_then_two_minutes(router: Router) -> None:
    answer = router.client().invoke(
        FunctionName="timed", InvocationType="Event", Payload=json.dumps({"timed": 1})
    )
    request_id = answer["ResponseMetadata"]["RequestId"]
    (record,) = wait_for(lambda: destination_records(router, "timed"))
    times = [r["at"] for r in router.recorded() if r["event"] == {"timed": 1}]
    assert len(times) == 3
    assert times[1] - times[0] >= 60 * SCALE - SLACK
    assert times[2] - times[1] >= 120 * SCALE - SLACK
    context = record["requestContext"]
    assert context["condition"] == "RetriesExhausted"
    assert context["approximateInvokeCount"] == 3
    assert context["requestId"] == request_id
    assert record["requestPayload"] == {"timed": 1}
    assert record["responsePayload"]["errorType"] == "RuntimeError"


def test_throttles_back_off_from_one_second_until_the_event_age_runs_out(
    router: Router,
) -> None:
    _Busy.times.clear()
    started = time.time()
    router.client().invoke(
        FunctionName="busy", InvocationType="Event", Payload=json.dumps({"busy": 1})
    )
    (record,) = wait_for(lambda: destination_records(router, "busy"))
    # Throttled all along: given up once its (scaled) maximum_event_age passed.
    assert time.time() - started >= 60 * SCALE
    context = record["requestContext"]
    assert context["condition"] == "EventAgeExceeded"
    assert context["approximateInvokeCount"] == 0
    assert record["requestPayload"] == {"busy": 1}
    gaps = [b - a for a, b in itertools.pairwise(_Busy.times)]
    # 1 s, 2 s, 4 s ... scaled (the endpoint's Retry-After: 3 is not Lambda's timing); 0.6 s
    # of age hold at most 7 attempts so spaced.
    for n, gap in enumerate(gaps[:-1]):
        assert gap >= SCALE * 2**n - SLACK, gaps
    assert 2 <= len(_Busy.times) <= 7, gaps
