"""Alembic migrations of the router's store; run them with ``router db upgrade``."""
