"""Source connectors: one module per source type, each implementing router.abc.Source."""
