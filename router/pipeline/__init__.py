"""The per-mapping pipeline: lanes, batching, dispatch, retries and destinations."""

from __future__ import annotations

from router.pipeline.batcher import BatchPolicy
from router.pipeline.core import Pipeline
from router.pipeline.delivery import Abandoned, Counters
from router.pipeline.retry import Backoff

__all__ = ["Abandoned", "Backoff", "BatchPolicy", "Counters", "Pipeline"]
