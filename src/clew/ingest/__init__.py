"""The ingest engine between the receivers and the span writer: a bounded queue and group commit."""
