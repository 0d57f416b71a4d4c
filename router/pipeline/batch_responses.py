"""Partial batch responses (``ReportBatchItemFailures``), read as Lambda reads them (pure)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from router.errors import PartialBatchFailure

__all__ = ["PartialBatchFailure", "failed_identifiers", "first_failed_index", "names_no_failure"]


def names_no_failure(response: Any) -> bool:
    """True when a ``ReportBatchItemFailures`` response plainly says the whole batch
    succeeded (null, empty, or no / an empty ``batchItemFailures`` list): the batch's item
    identifiers are not needed to read it."""
    if response is None or response == "" or response == {}:
        return True
    if not isinstance(response, dict):
        return False
    items = response.get("batchItemFailures")
    return items is None or (isinstance(items, list) and not items)


def failed_identifiers(response: Any, identifiers: Collection[str]) -> set[str]:
    """The ``itemIdentifier``s a ``ReportBatchItemFailures`` response marks as failed.

    As AWS: a null or empty response, or an empty / null ``batchItemFailures`` list, means the
    whole batch succeeded; a response that is not an object, whose ``batchItemFailures`` is
    not a list, or that holds an item without a non-empty string ``itemIdentifier`` that
    names a record of the batch raises :class:`PartialBatchFailure` (whole batch failed).
    """
    if names_no_failure(response):
        return set()
    if not isinstance(response, dict):
        raise PartialBatchFailure(f"response is a {type(response).__name__}, not an object")
    items = response.get("batchItemFailures")
    if not isinstance(items, list):
        raise PartialBatchFailure("batchItemFailures is not a list")
    failed: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or "itemIdentifier" not in item:
            raise PartialBatchFailure(f"batchItemFailures entry {item!r} has no itemIdentifier")
        ident = item["itemIdentifier"]
        if isinstance(ident, dict) and "partition" in ident and "offset" in ident:
            # Kafka's form: {"partition": "<topic>-<partition>", "offset": N}.
            ident = f"{ident['partition']}:{ident['offset']}"
        if not isinstance(ident, str) or not ident:
            raise PartialBatchFailure(f"itemIdentifier {ident!r} is empty or not a string")
        if ident not in identifiers:
            raise PartialBatchFailure(f"itemIdentifier {ident!r} is not in the batch")
        failed.add(ident)
    return failed


def first_failed_index(identifiers: Sequence[str], failed: Collection[str]) -> int:
    """Index of the first record (in batch order) whose identifier failed."""
    for i, ident in enumerate(identifiers):
        if ident in failed:
            return i
    return len(identifiers)
