"""AWS connectors (aioboto3): the ``sqs`` and ``s3`` sources (``sqs.py``, ``s3.py``), the
``sqs`` / ``sns`` / ``s3`` destinations (``destinations.py``), the ``lambda`` invoker
(``lambda_invoker.py``) and what they share (``common.py``: settings, sessions, ARNs, error
classification). Each names aioboto3 in ``requires`` and imports it where it runs (through
``common.py``): the classes and settings import without it. Install with
``pip install 'event-router[aws]'``."""
