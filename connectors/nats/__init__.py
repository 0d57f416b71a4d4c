"""NATS JetStream connectors (nats-py): the source (``source.py``: a durable pull consumer per
mapping, messages acknowledged after delivery), the destination (``destination.py``: a
JetStream publish), their settings and the records built from messages (``records.py``).
Install with ``pip install 'event-router[nats]'``. The library is imported where the
connectors run: their classes and settings import without it."""
