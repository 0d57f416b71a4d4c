"""Example handlers bundled with the router, used by the example configuration."""
