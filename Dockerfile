# The guardstream components as one image: `docker build -t guardstream .`, then
# `docker run guardstream COMMAND` (bridge, worker, sink, gateway, notifier, lag-exporter, commands, topics apply, ...).
# infra/compose.yml runs the whole pipeline with it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# only what the package is built from: no local state, virtualenvs or tests in the image
COPY pyproject.toml README.md ./
COPY guardstream ./guardstream
COPY connectors ./connectors
COPY gateway ./gateway
COPY infra ./infra
COPY notifier ./notifier
COPY schemas ./schemas
COPY sinks ./sinks
COPY streams ./streams
RUN pip install . && rm -rf /src

# state (the gateway's generated secret on the embedded profile, operator checkpoints) lives here
RUN useradd --system --home-dir /var/lib/guardstream --create-home guardstream
USER guardstream
WORKDIR /var/lib/guardstream
ENV GUARDSTREAM_STATE_DIR=/var/lib/guardstream GUARDSTREAM_METRICS_HOST=0.0.0.0

# /metrics, /healthz and /readyz of every component; the gateway's WebSocket and dashboard
EXPOSE 9400 8765
ENTRYPOINT ["guardstream"]
CMD ["--help"]
