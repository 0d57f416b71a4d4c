"""Example handlers bundled with the router, used by the embedded default configuration
(``config/router.yaml``)."""
