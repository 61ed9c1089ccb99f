# syntax=docker/dockerfile:1
# Parley token service (`parley-tokens`, run as `python -m tokens`, port 8080) serving the
# built web frontend; metrics on 9101.
# Build from the repository root:
#   docker build -f docker/tokens.Dockerfile -t parley-tokens .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:22.20.0-bookworm-slim

FROM ${NODE_IMAGE} AS frontend
WORKDIR /frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only the token service's own dependencies (tokens/requirements.txt, pinned by
# constraints.txt): no worker package, no models, no llama.cpp. tokens/ imports nothing
# from the worker (tests/test_k8s_docker.py checks both).
COPY constraints.txt ./
COPY tokens/requirements.txt tokens/requirements.txt
RUN pip install -c constraints.txt -r tokens/requirements.txt
COPY tokens/ /app/tokens/
RUN PYTHONPATH=/app python -m tokens --help > /dev/null \
    && python -m compileall -q /app/tokens

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /nonexistent --shell /usr/sbin/nologin parley
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app/tokens /app/tokens
COPY --from=frontend /frontend/dist /app/frontend/dist
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PYTHONPATH=/app \
    PARLEY_TOKEN_STATIC_DIR=/app/frontend/dist
WORKDIR /app
USER 10001:10001
# API and web app on 8080; Prometheus metrics (PARLEY_TOKEN_METRICS_PORT) on 9101.
EXPOSE 8080 9101
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "tokens"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
