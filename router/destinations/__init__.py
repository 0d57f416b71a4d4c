"""Destinations that need no broker library: ``directory``, ``table`` and ``http``."""
