# The Lazarus image: `lazarus` (worker, topics, sample) and `dlq` (reprocessor and exporter), with
# the example pipeline and its schemas. docker-compose.yml builds it once as lazarus:local.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and code first; schemas and examples change more often and come last.
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY reprocessor ./reprocessor
COPY lazarus ./lazarus
RUN pip install . && lazarus --help >/dev/null && dlq --help >/dev/null

COPY schemas ./schemas
COPY examples ./examples

RUN useradd --system --uid 10001 --home-dir /app lazarus \
    && mkdir -p /app/.cache/state \
    && chown -R lazarus /app/.cache
USER lazarus
ENV LAZARUS_STATE_DIR=/app/.cache/state

# 9464: worker metrics (/metrics, /livez, /readyz); 9465: dlq exporter.
EXPOSE 9464 9465
CMD ["lazarus", "--help"]
