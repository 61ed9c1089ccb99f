# syntax=docker/dockerfile:1
# Parley token service (`parley-tokens`, port 8080) serving the built web frontend.
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
COPY pyproject.toml constraints.txt README.md ./
COPY agent/ agent/
COPY tokens/ tokens/
# The token service needs a handful of the worker's dependencies (no models, no
# llama.cpp): the project without dependencies, then exactly what tokens/ imports
# (tests/test_k8s_docker.py checks this list against the code). Versions: constraints.txt.
RUN pip install -c constraints.txt --no-deps . \
    && pip install -c constraints.txt fastapi uvicorn livekit-api python-dotenv \
    && parley-tokens --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /nonexistent --shell /usr/sbin/nologin parley
COPY --from=build /opt/venv /opt/venv
COPY --from=frontend /frontend/dist /app/frontend/dist
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PARLEY_TOKEN_STATIC_DIR=/app/frontend/dist
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["parley-tokens"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
