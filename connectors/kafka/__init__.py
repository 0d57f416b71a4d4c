"""Kafka connectors (aiokafka): the source (``source.py``: Lambda's self-managed Apache Kafka
event source mapping), the destination (``destination.py``), their settings, the Lambda
records built from the client's messages (``records.py``) and the offset bookkeeping
(``offsets.py``). What they take from aiokafka is in ``client.py``, imported where they
run: the classes and settings import without it. Install with
``pip install 'event-router[kafka]'``."""
