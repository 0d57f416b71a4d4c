"""AWS connectors (aioboto3): the ``sqs`` and ``s3`` sources (``sqs.py``, ``s3.py``), the
``sqs`` / ``sns`` / ``s3`` destinations (``destinations.py``), the ``lambda`` invoker
(``lambda_invoker.py``) and what they share (``common.py``: settings, sessions, ARNs, error
classification). Install with ``pip install 'event-router[aws]'``."""

from router.registry import require

require("aioboto3", extra="aws")
