# Parley: `make run` starts the whole stack, `make test` runs every test.
# Both install whatever is missing first (idempotent; caches make re-runs fast).

SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.parley-installed

.PHONY: eval soak bench-fallback install run test test-fast test-model test-e2e lint fmt lock bench bench-tokens clean system-deps frontend k8s-check sip-up sip-down sip-setup bench-sip

install: system-deps $(STAMP) $(BIN)/livekit-server $(BIN)/livekit-sip $(BIN)/kustomize $(BIN)/promtool frontend

$(BIN)/python:
	@echo "==> creating $(VENV) with $$($(PY) --version)"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama-cpp-python builds from source once (~5 min on 2 cores) for this machine's CPU level
# (scripts/build-llama-wheel.sh); the wheel is kept in ~/.cache/parley/wheels for every later
# install. pip keeps an installed llama-cpp-python of the same version, so a wheel of another
# level (another folder) is put in explicitly.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt scripts/build-llama-wheel.sh
	@echo "==> installing Python dependencies (pinned by constraints.txt)"
	wheels="$$(bash scripts/build-llama-wheel.sh $(BIN)/pip)" \
	&& $(BIN)/pip install --progress-bar off -c constraints.txt --find-links "$$wheels" -e '.[dev]' \
	&& if [ "$$(cat $(VENV)/.parley-llama-wheels 2>/dev/null)" != "$$wheels" ]; then \
		$(BIN)/pip install -q --no-deps --force-reinstall "$$wheels"/llama_cpp_python-*.whl \
		&& echo "$$wheels" > $(VENV)/.parley-llama-wheels; fi
	@touch $(STAMP)

$(BIN)/livekit-server: scripts/install-livekit-server.sh | $(BIN)/python
	bash scripts/install-livekit-server.sh $(BIN)/livekit-server

# LiveKit SIP (cgo: opus, soxr from system-deps) from the Go module proxy.
$(BIN)/livekit-sip: scripts/install-livekit-sip.sh | $(BIN)/python system-deps
	bash scripts/install-livekit-sip.sh $(BIN)/livekit-sip

$(BIN)/kustomize: scripts/install-kustomize.sh | $(BIN)/python
	bash scripts/install-kustomize.sh $(BIN)/kustomize

# promtool (Prometheus' rule checker) from the Go module proxy: the alert rules' tests run it.
$(BIN)/promtool: scripts/install-promtool.sh | $(BIN)/python
	bash scripts/install-promtool.sh $(BIN)/promtool

system-deps:
	bash scripts/install-system-deps.sh

# Web frontend (served by parley-tokens): npm ci + vite build, only when dist/ is
# missing or older than its sources or the lockfile.
FRONTEND_SRC := $(wildcard frontend/src/*) frontend/index.html frontend/package.json \
	frontend/package-lock.json frontend/tsconfig.json frontend/vite.config.ts
frontend: frontend/dist/index.html
frontend/dist/index.html: $(FRONTEND_SRC) scripts/build-frontend.sh | system-deps
	bash scripts/build-frontend.sh

run: install
	bash scripts/run.sh

# Telephony on loopback: Redis + livekit-server + livekit-sip in the background, then
# trunks and dispatch rule. The worker runs separately (make run, or python -m agent start).
sip-up: install
	bash scripts/sip-up.sh

sip-down:
	bash scripts/sip-down.sh

# (Re-)provision trunks and dispatch rule on a running server; idempotent.
sip-setup: install
	$(BIN)/parley-sip setup

# Cloud failure → first local audio, per failure mode, against the local stack alone.
bench-fallback: install
	$(BIN)/python scripts/bench_fallback.py $(BENCH_ARGS)

# Turn latency, phone (sipp + LiveKit SIP) vs WebRTC (parley-call), same worker and audio.
bench-sip: install
	$(BIN)/python scripts/bench_sip.py $(BENCH_ARGS)

# Tests in three layers (see README "Tests"): fast (no models, no processes), model (real
# local models, no processes), e2e (real livekit-server / worker / token service / SIP
# processes on loopback). `make test` runs all three, fastest first.
test: install
	$(BIN)/ruff check agent tokens ops harness tests scripts
	$(BIN)/python -m pytest -ra -m "not e2e and not model" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -ra -m "model and not e2e" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -ra -m e2e $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -ra -m "not e2e and not model" $(PYTEST_ARGS)

test-model: install
	$(BIN)/python -m pytest -ra -m "model and not e2e" $(PYTEST_ARGS)

test-e2e: install
	$(BIN)/python -m pytest -ra -m e2e $(PYTEST_ARGS)

# Bounded soak with faults (loopback only, ~10 min, stops by itself): two workers, one
# livekit-server, 20 calls two at a time; job SIGKILL, drain, server restart, provider outage.
soak: install
	$(BIN)/python -m harness.soak $(SOAK_ARGS)

# Render every k8s overlay and run every manifest/Dockerfile check (installs its own tools).
k8s-check:
	bash scripts/k8s-check.sh

# Spoken evaluation suite (evals/*.yaml) through a stack it starts on free loopback ports;
# prints pass rate, p50/p95, WER and the worker's per-stage medians; writes eval-output/<time>/report.html.
# EVAL_ARGS e.g. "--concurrency 1,2,4", "--repeat 3", "--transport sip", or scenario files.
eval: install
	$(BIN)/python -m harness.eval.stack $(EVAL_ARGS)

# The benchmark is the evaluation suite repeated (figures per stage in the summary and report).
bench: install
	$(BIN)/python -m harness.eval.stack --repeat 3 $(BENCH_ARGS)

# Token endpoint throughput and p99 latency on loopback (wrk, bounded run).
bench-tokens: install
	bash scripts/bench-tokens.sh

lint: install
	$(BIN)/ruff check agent tokens ops harness tests scripts

fmt: install
	$(BIN)/ruff format agent tokens ops harness tests scripts
	$(BIN)/ruff check --fix agent tokens ops harness tests scripts

# Re-pin every transitive dependency from the current environment.
lock: $(BIN)/python
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache reports test-output frontend/dist frontend/node_modules
