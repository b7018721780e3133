# clew in a container (deploy/docker-compose.yml builds it). The embedded store would live in
# /var/lib/clew; with --storage clickhouse://... the directory keeps only keys and the log's state.
FROM python:3.12-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/clew clew && mkdir -p /var/lib/clew \
    && chown clew /var/lib/clew
USER clew
EXPOSE 4317 4318 9411 16686
CMD ["clew", "serve", "--data-dir", "/var/lib/clew"]
