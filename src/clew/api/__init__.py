"""The query APIs on the http port: the native API (`/api/v1/...`) and Jaeger's (`/api/...`)."""
