"""Event filtering: AWS EventBridge event patterns, as used by Lambda FilterCriteria.

Public API:

* :func:`compile_patterns` turns a list of patterns (JSON text or mappings) into a
  :class:`Matcher`; ``Matcher.matches(event)`` is true when any pattern matches.
* :class:`PatternError` (a ``ValueError``) is raised for patterns AWS would reject.
* :func:`filter_view` gives, for a source record, the object Lambda applies patterns to
  (SQS ``body`` / Kafka ``value`` / Kinesis ``data`` decoded); :func:`view_for` gives that
  function for a source type.
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
from router.filters.view import SOURCE_TYPES, filter_view, view_for

__all__ = [
    "MAX_NESTING_DEPTH",
    "MAX_PATTERN_CHARS",
    "MAX_WILDCARD_COMPLEXITY",
    "SOURCE_TYPES",
    "Matcher",
    "PatternError",
    "RawText",
    "compile_patterns",
    "filter_view",
    "view_for",
]
