"""Event filtering: AWS EventBridge event patterns, as used by Lambda FilterCriteria.

Public API:

* :func:`compile_patterns` turns a list of patterns (JSON text or mappings) into a
  :class:`Matcher`; ``Matcher.matches(event)`` is true when any pattern matches.
* :class:`PatternError` (a ``ValueError``) is raised for patterns AWS would reject.
* :func:`filter_view` gives, for a source record, the object Lambda applies patterns to
  (SQS ``body`` / Kafka ``value`` / Kinesis ``data`` decoded).

The module is pure: no I/O, no logging on the per-record path.
"""

from __future__ import annotations

from router.filters.compile import Matcher, compile_patterns
from router.filters.parse import PatternError
from router.filters.spec import RawText
from router.filters.view import SOURCE_TYPES, filter_view

__all__ = ["SOURCE_TYPES", "Matcher", "PatternError", "RawText", "compile_patterns", "filter_view"]
