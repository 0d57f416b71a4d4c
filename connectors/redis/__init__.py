"""Redis Streams connectors (redis.asyncio): the source (``source.py``: a consumer group per
mapping, read with ``XREADGROUP``, acknowledged with ``XACK`` after delivery), the
destination (``destination.py``: ``XADD``), their settings and the records built from stream
entries (``records.py``). Install with ``pip install 'event-router[redis]'``. The library is
imported where the connectors run: their classes and settings import without it."""
