"""``router test-pattern``: check an event against event patterns from the command line.

The patterns come from ``--pattern`` (repeatable: any one matching is a match, as in a
mapping) or from a stored mapping (``--mapping NAME``).  ``--source TYPE`` (or the mapping's
source type) applies that source's filter view first, as the pipeline does: an SQS ``body``
or a Kafka ``value`` is decoded before the patterns see it.  The event is one record as it
appears in that source's Lambda event; a whole Lambda event (``{"Records": [...]}``, or
Kafka's ``{"records": {"topic-0": [...]}}``) is taken record by record.

Exit status: 0 when the patterns match (any record, for a whole event), 1 when they do not,
2 when a pattern is invalid, the event cannot be read or decoded, or an argument is wrong
(the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from router.filters.compile import compile_patterns
from router.filters.parse import PatternError

EXIT_MATCH = 0
EXIT_NO_MATCH = 1
EXIT_ERROR = 2

View = Callable[[Mapping[str, Any]], Any]


class _UsageError(Exception):
    pass


def _read(argument: str, what: str) -> str:
    """The argument itself, or the content of the file it names as ``@path``."""
    if not argument.startswith("@"):
        return argument
    try:
        return Path(argument[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _UsageError(f"cannot read {what} file {argument[1:]!r}: {e}") from e


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router test-pattern",
        description="Test an event against EventBridge/Lambda filter patterns.",
        epilog="Exit status: 0 match, 1 no match, 2 invalid pattern, unreadable event or "
        "bad arguments.",
    )
    parser.add_argument(
        "--pattern",
        action="append",
        help="pattern JSON, or @file; repeat for several patterns (any one may match)",
    )
    parser.add_argument("--event", required=True, help="event JSON, or @file")
    parser.add_argument(
        "--source",
        metavar="TYPE",
        help="apply this source type's filter view first, as a mapping does (an installed "
        "source type, or kinesis, dynamodb)",
    )
    parser.add_argument(
        "--mapping",
        metavar="NAME",
        help="take the patterns and the source type from this stored mapping",
    )
    parser.add_argument(
        "--config", "-c", help="YAML file or directory (default: ./config, or $ROUTER_CONFIG)"
    )
    parser.add_argument(
        "--store",
        help="store URL (default: $ROUTER_STORE_URL, the config's router.store, or "
        "sqlite:///router.db)",
    )
    return parser


def source_view(source_type: str) -> View:
    """The filter view a mapping of ``source_type`` applies: the view its source class
    declares (``traits.filter_view``), as the pipeline uses it.  Types with a view but no
    source (``kinesis``, ``dynamodb``) use the view registered for them."""
    from router import registry
    from router.errors import RouterError

    try:
        return registry.filter_view(source_type)
    except ValueError:
        raise _UsageError(
            f"--source: no filter view for source type {source_type!r}; "
            f"known types: {', '.join(registry.viewed())}"
        ) from None
    except RouterError as e:  # the source's library is missing, say
        raise _UsageError(f"--source: {e}") from None


async def _stored_mapping(args: argparse.Namespace) -> tuple[list[str], str]:
    """The patterns and the source type of the stored mapping ``args.mapping``."""
    from router.cli import _optional_config, _store_url
    from router.errors import RouterError
    from router.store import connect

    try:
        config = _optional_config(args)
        store = await connect(_store_url(args, config))
    except RouterError as e:
        raise _UsageError(f"--mapping: {e}") from e
    try:
        row = await store.get_mapping_by_name(args.mapping)
    finally:
        await store.aclose()
    if row is None:
        raise _UsageError(
            f"--mapping: no mapping named {args.mapping!r} (see `router mappings list`)"
        )
    criteria = row.filter_criteria or {}
    patterns = [str(f.get("Pattern", f.get("pattern"))) for f in criteria.get("Filters", [])]
    return patterns, row.source_type


def _records(event: Any) -> list[Any] | None:
    """The records of a whole Lambda event, or None when the event is one record."""
    if isinstance(event, dict):
        records = event.get("Records")
        if isinstance(records, list):
            return records
        grouped = event.get("records")
        if isinstance(grouped, dict) and all(isinstance(v, list) for v in grouped.values()):
            return [r for rs in grouped.values() for r in rs]
    return None


def test_pattern_main(argv: Sequence[str] | None = None) -> int:
    """Run ``router test-pattern`` with ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    try:
        if args.mapping is not None:
            if args.pattern or args.source:
                raise _UsageError("--mapping takes the patterns and the source type itself")
            patterns, source_type = asyncio.run(_stored_mapping(args))
            print(
                f"mapping {args.mapping}: source type {source_type}, "
                f"{len(patterns) or 'no'} pattern{'s' if len(patterns) != 1 else ''}"
            )
        else:
            if not args.pattern:
                raise _UsageError("give --pattern (one or more) or --mapping")
            patterns = [_read(p, "pattern") for p in args.pattern]
            source_type = args.source
        view = source_view(source_type) if source_type else None
        matcher = compile_patterns(patterns)
        event_text = _read(args.event, "event")
        try:
            event = json.loads(event_text)
        except ValueError as e:
            raise _UsageError(f"event is not valid JSON: {e}") from e
        records = _records(event) if view is not None else None
        if records is None:
            matched = [matcher.matches(_apply(view, event))]
        else:
            matched = [matcher.matches(_apply(view, r)) for r in records]
    except (PatternError, _UsageError) as e:
        print(f"router test-pattern: {e}", file=sys.stderr)
        return EXIT_ERROR
    if records is None:
        print("match" if matched[0] else "no match")
    else:
        for i, hit in enumerate(matched):
            print(f"record {i}: {'match' if hit else 'no match'}")
    return EXIT_MATCH if any(matched) else EXIT_NO_MATCH


def _apply(view: View | None, record: Any) -> Any:
    if view is None:
        return record
    if not isinstance(record, Mapping):
        raise _UsageError("with --source, the event must be a record (a JSON object)")
    return view(record)


if __name__ == "__main__":
    sys.exit(test_pattern_main())
