"""``router test-pattern``: check an event against an event pattern from the command line.

Exit status: 0 when the pattern matches, 1 when it does not, 2 when the pattern is invalid or
the event cannot be read or decoded (the reason goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from router.filters.compile import compile_patterns
from router.filters.parse import PatternError

EXIT_MATCH = 0
EXIT_NO_MATCH = 1
EXIT_ERROR = 2


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
        description="Test an event against an EventBridge/Lambda filter pattern.",
        epilog="Exit status: 0 match, 1 no match, 2 invalid pattern or unreadable event.",
    )
    parser.add_argument("--pattern", required=True, help="pattern JSON, or @file")
    parser.add_argument("--event", required=True, help="event JSON, or @file")
    return parser


def test_pattern_main(argv: Sequence[str] | None = None) -> int:
    """Run ``router test-pattern`` with ``argv`` (default: ``sys.argv[1:]``)."""
    args = _parser().parse_args(argv)
    try:
        pattern_text = _read(args.pattern, "pattern")
        event_text = _read(args.event, "event")
        matcher = compile_patterns([pattern_text])
        try:
            event = json.loads(event_text)
        except ValueError as e:
            raise _UsageError(f"event is not valid JSON: {e}") from e
    except (PatternError, _UsageError) as e:
        print(f"router test-pattern: {e}", file=sys.stderr)
        return EXIT_ERROR
    if matcher.matches(event):
        print("match")
        return EXIT_MATCH
    print("no match")
    return EXIT_NO_MATCH


if __name__ == "__main__":
    sys.exit(test_pattern_main())
