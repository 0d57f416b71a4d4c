"""Event filtering: AWS EventBridge event patterns, as used by Lambda FilterCriteria.

Public API:

* :func:`compile_patterns` turns a list of patterns (JSON text or mappings) into a
  :class:`Matcher`; ``Matcher.matches(event)`` is true when any pattern matches.
* :class:`PatternError` (a ``ValueError``) is raised for patterns AWS would reject.
* What patterns are applied to is the source's filter view (``SourceTraits.filter_view``:
  SQS ``body`` / Kafka ``value`` / Kinesis ``data`` decoded); :mod:`router.filters.view` has
  the building blocks and the views of the AWS sources that have no connector yet.
* ``MAX_PATTERN_CHARS``, ``MAX_WILDCARD_COMPLEXITY``, ``MAX_NESTING_DEPTH``: the limits a
  pattern is checked against (docs/filters.md, "Limits").

The module is pure: no I/O, no logging on the per-record path.
"""

from __future__ import annotations

from router.filters.compile import Matcher, compile_patterns
from router.filters.parse import PatternError
from router.filters.spec import (
    MAX_NESTING_DEPTH,
    MAX_PATTERN_CHARS,
    MAX_WILDCARD_COMPLEXITY,
    RawText,
)

__all__ = [
    "MAX_NESTING_DEPTH",
    "MAX_PATTERN_CHARS",
    "MAX_WILDCARD_COMPLEXITY",
    "Matcher",
    "PatternError",
    "RawText",
    "compile_patterns",
]
