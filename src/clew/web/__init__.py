"""The http port (16686): health now; the Jaeger API, native API and UI mount here."""
