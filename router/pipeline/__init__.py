"""The per-mapping pipeline: intake, lanes and backpressure (:mod:`~router.pipeline.core`),
and the delivery policy of each kind of source (stream, queue, asynchronous)."""

from __future__ import annotations

from router.backoff import Backoff
from router.counters import Counters
from router.pipeline.batcher import BatchPolicy
from router.pipeline.core import Pipeline
from router.pipeline.delivery import Abandoned

__all__ = ["Abandoned", "Backoff", "BatchPolicy", "Counters", "Pipeline"]
