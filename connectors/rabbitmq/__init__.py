"""RabbitMQ connectors (aio-pika): the source (``source.py``: Lambda's Amazon MQ for RabbitMQ
event source mapping), the destination (``destination.py``), their settings and the
connection they share (``settings.py``, ``connection.py``) and the ``aws:rmq`` records
(``records.py``). Install with ``pip install 'event-router[rabbitmq]'``. The library is
imported where the connectors run: their classes and settings import without it."""
