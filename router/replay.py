"""Re-invoking the failed events the ``table`` destination keeps (``router replay``)."""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from router.abc import Store
from router.config import RouterConfig
from router.functions import Functions
from router.models import FailedEvent, Invocation, Outcome
from router.pipeline.destination_records import REJECTED

logger = logging.getLogger(__name__)


class Replay(enum.StrEnum):
    """What became of one failed event."""

    UNKNOWN_FUNCTION = "unknown function"
    """Its function is not declared in the configuration: skipped (counts as a failure)."""
    NOTHING_TO_REPLAY = "nothing to replay"
    """The source could not turn it into an event (``RecordRejected``): skipped."""
    WOULD_REPLAY = "would replay"
    """A dry run: it would be invoked."""
    REPLAYED = "replayed"
    """The function took it; it is marked replayed."""
    FAILED = "failed"
    """The function failed it again (or named records of it in ``batchItemFailures``)."""


@dataclass(frozen=True, slots=True)
class Replayed:
    event: FailedEvent
    what: Replay
    detail: str = ""
    """The reason a rejected event was kept, or how a failed replay ended."""


async def replay(
    config: RouterConfig,
    store: Store,
    events: Sequence[FailedEvent],
    *,
    dry_run: bool = False,
    running: Functions | None = None,
) -> AsyncIterator[Replayed]:
    """Invoke each of ``events`` again with the request it failed with, one after the other;
    yields what became of each. The invoker of a function in ``running`` (a running router's
    own) is used as it is; any other is started the first time its function is needed, and
    closed at the end."""
    functions = Functions({}, store)
    functions.on_init_error = _init_error
    try:
        for event in events:
            function = config.functions.get(event.function_name)
            if function is None:
                yield Replayed(event, Replay.UNKNOWN_FUNCTION)
                continue
            payload = event.payload
            if event.condition == REJECTED:
                reason = payload.get("responsePayload", {}).get("errorMessage", "")
                yield Replayed(event, Replay.NOTHING_TO_REPLAY, reason)
                continue
            if dry_run:
                yield Replayed(event, Replay.WOULD_REPLAY)
                continue
            invoker = running.get(function.name) if running is not None else None
            if invoker is None:
                invoker = await functions.start_one(function)
            result = await invoker.invoke(
                Invocation(
                    function=function.name,
                    event=payload.get("requestPayload", payload.get("payload")),
                    request_id=str(uuid.uuid4()),
                    deadline=time.time() + function.timeout,
                    invoked_function_arn=function.invoked_arn,
                )
            )
            reported = isinstance(result.payload, dict) and result.payload.get("batchItemFailures")
            if result.outcome is Outcome.SUCCESS and not reported:
                assert event.id is not None
                await store.mark_replayed([event.id])
                yield Replayed(event, Replay.REPLAYED)
            else:
                yield Replayed(event, Replay.FAILED, f"{result.outcome} {result.detail}")
    finally:
        await functions.aclose()


def _init_error(function: str, message: str) -> None:
    logger.warning("function %s failed to initialise: %s", function, message)
