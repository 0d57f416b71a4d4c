"""SNS HTTP(S) subscriptions: an endpoint on the ingress listener that an SNS topic (AWS or an
emulator) delivers to. ``source.py`` is the ``sns`` source (confirmation, delivery through
the asynchronous queue), ``messages.py`` reads what SNS posts and builds Lambda's
``aws:sns`` event, ``signature.py`` verifies SignatureVersion 1 and 2. Signature
verification needs ``cryptography``: ``pip install 'event-router[sns]'``. The library is
imported where the connectors run: their classes and settings import without it."""
