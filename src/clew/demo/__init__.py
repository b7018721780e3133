"""The demo shop: a multi-service app traced with `clew.instrument()`, and its load generator."""
