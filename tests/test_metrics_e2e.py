"""Metrics end to end: real calls through livekit-server and the session's worker, then
scrapes of the worker's /metrics (the same page Prometheus reads)."""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import STAGES
from harness.devstack import Call, LiveKitServer, TokenService, Worker
from tests.conftest import records, wait_for, wait_report

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(worker: Worker) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(worker.metrics()) for s in fam.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def stage_counts(samples: Samples) -> dict[str, float]:
    return {s: total(samples, "parley_turn_latency_seconds_count", stage=s) for s in STAGES}


def test_a_call_is_counted_with_every_stage_and_the_listener_figure(call, worker: Worker, fixtures: Path,
                                                                     report_dir: Path, out_dir: Path):
    before = scrape(worker)
    room = f"t-metrics-{secrets.token_hex(3)}"
    r = call("--room", room, "--audio", str(fixtures / "capital_france.wav"))
    assert r.rc == 0, r.stderr
    (turn,) = r.turns
    assert turn["turn_latency_ms"] is not None
    # The agent sent its stages back for the turn parley-call measured.
    assert turn.get("agent_stages_ms", {}).get("llm_ttft") is not None, turn

    before_calls = total(before, "parley_calls_total")

    def settled() -> Samples | None:
        s = scrape(worker)
        return s if total(s, "parley_calls_total") > before_calls and s.get(("parley_calls_active", ()), 0) == 0 \
            else None

    after = wait_for(settled, 30, interval=0.5)
    assert after, f"call not counted or still active:\n{worker.metrics()}"
    ended = total(after, "parley_calls_total") - before_calls
    assert ended == 1, ended
    assert total(after, "parley_calls_total", outcome="caller_hangup") == \
        total(before, "parley_calls_total", outcome="caller_hangup") + 1
    grew = {s: after_n - stage_counts(before)[s] for s, after_n in stage_counts(after).items()}
    assert all(n >= 1 for n in grew.values()), f"stages without an observation: {grew}"

    # The caller's figure is in the session report, on the turn it measured.
    report = wait_report(report_dir, room)
    heard = [t for t in report["turns"] if t.get("listener_latency_ms") is not None]
    assert heard and heard[0]["listener_latency_ms"] == pytest.approx(turn["turn_latency_ms"], abs=0.2), \
        (report["turns"], turn)
    (out_dir / "metrics-after-call.txt").write_text(worker.metrics())


def job_pid(worker: Worker, room: str) -> int | None:
    """The job process running `room`'s call: the entrypoint's first line, logged in that
    process, carries the room (log context) and the process id."""
    for rec in records(worker):
        if rec.get("room") == room and str(rec.get("message", "")).startswith("call dispatched") and rec.get("pid"):
            return int(rec["pid"])
    return None


def test_a_killed_job_process_keeps_the_counts_and_frees_its_call(livekit_server: LiveKitServer, worker: Worker,
                                                                   fixtures: Path):
    # One finished call first (any earlier test's calls count too): there is something to lose.
    wait_for(lambda: scrape(worker).get(("parley_calls_active", ()), 0) == 0, 30, interval=0.5)
    before = scrape(worker)
    assert total(before, "parley_calls_total") >= 1, "run with the other metrics test (it makes a call)"

    caller = Call(livekit_server, [fixtures / "name_memory_1.wav", fixtures / "long_question.wav"], timeout=30).start()
    try:
        assert wait_for(lambda: caller.of("turn"), 120), f"no first turn: {caller.describe()}"
        live = wait_for(lambda: (s := scrape(worker)).get(("parley_calls_active", ()), 0) == 1 and s, 10)
        assert live, worker.metrics()
        assert live[("parley_job_rss_bytes", ())] > 100 * 2**20, "a job process with models loaded"
        pid = wait_for(lambda: job_pid(worker, caller.room), 10)
        assert pid, "no log record names the call's job process"
        os.kill(pid, signal.SIGKILL)

        def recovered() -> Samples | None:
            s = scrape(worker)
            return s if s.get(("parley_calls_active", ()), 0) == 0 else None

        after = wait_for(recovered, 30, interval=0.5)
        assert after, f"the killed call still counts as active:\n{worker.metrics()}"
        for name in ("parley_calls_total", "parley_turn_latency_seconds_count", "parley_turn_latency_seconds_sum"):
            assert total(after, name) >= total(live, name) > 0, (name, total(live, name), total(after, name))
        # The killed process's own first turn stays counted too.
        assert stage_counts(after)["e2e"] >= stage_counts(before)["e2e"] + 1
    finally:
        caller.wait(90)
    # Leave the session's worker ready for the next test: every process it started is warm.
    start = time.monotonic()
    ready = wait_for(lambda: _all_processes_initialized(worker) and not _active_jobs(worker), 120, interval=0.5)
    assert ready, f"worker did not recover within {time.monotonic() - start:.0f}s"


def _all_processes_initialized(worker: Worker) -> bool:
    messages = [rec.get("message") for rec in records(worker)]
    return messages.count("process initialized") >= messages.count("initializing process")


def _active_jobs(worker: Worker) -> bool:
    code, body = worker.health("/worker")
    return code != 200 or bool(json.loads(body).get("active_jobs"))


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stub: keeps every POSTed body by path."""

    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).bodies.append((self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_people_read_call_logs_and_turn_spans_reach_an_otlp_collector(livekit_server: LiveKitServer,
                                                                     fixtures: Path, out_dir: Path, call):
    """`make run`'s log format (PARLEY_LOG_FORMAT=human), PARLEY_LOG_LEVEL (DEBUG: the job process's
    recognizer lines appear) and OTEL_EXPORTER_OTLP_ENDPOINT, on a second worker of its own (its
    own agent name, so the session's worker takes none of its calls)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    w = Worker(env={**livekit_server.env(), "PARLEY_AGENT_NAME": "parley-obs", "PARLEY_LOG_FORMAT": "human",
                    "PARLEY_LOG_LEVEL": "debug",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{httpd.server_port}",
                    "PARLEY_IDLE_PROCESSES": "1", "PARLEY_LOAD_CPU": "0",
                    "PARLEY_REPORT_DIR": str(out_dir / "reports")})
    try:
        w.start(out_dir / "logs", name="worker-human")
        room = f"t-human-{secrets.token_hex(3)}"
        r = call("--agent", "parley-obs", "--room", room, "--audio", str(fixtures / "capital_france.wav"))
        assert r.rc == 0, r.stderr
        assert w.proc is not None
        line = rf"\[room={room} participant=\S+\]"
        assert w.proc.wait_log(line + r" turn .*llm_ttft=", 30), w.proc.log()[-3000:]
        assert w.proc.wait_log(line + r" call counted outcome=caller_hangup", 30), w.proc.log()[-3000:]
        assert re.search(r"^\S+ DEBUG +parley\.stt .*stt [\d.]+s audio", w.proc.log(), re.M), w.proc.log()[-3000:]
        call_lines = [ln for ln in w.proc.log().splitlines() if f"room={room}" in ln]
        assert not [ln for ln in call_lines if ln.lstrip().startswith("{")], "JSON lines in the human log"
        assert wait_for(lambda: any(p == "/v1/traces" and b"llm_node" in b for p, b in _Collector.bodies), 30), \
            f"no turn span reached the collector: {[p for p, _ in _Collector.bodies]}"
    finally:
        w.stop()
        httpd.shutdown()
        httpd.server_close()


# Exported, but only once a configured cloud provider has failed (its provider label comes from
# the configuration); tests/test_metrics.py and tests/test_monitoring.py cover it without a cloud.
ONLY_AFTER_A_FALLBACK = {"parley_fallbacks_total"}


def test_alerts_and_dashboard_use_names_a_real_scrape_returns(livekit_server: LiveKitServer, worker: Worker,
                                                            out_dir: Path):
    from .test_k8s import K8S, Rendered, render
    from .test_monitoring import adapter_rules, dashboard, dashboard_exprs, promql_names, rule_exprs

    tokens = TokenService(env={**livekit_server.env(), "PARLEY_TOKEN_API_KEY": ""})
    tokens.start(out_dir / "logs", name="parley-tokens-metrics")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{tokens.metrics_port}/metrics", timeout=10) as r:
            token_page = r.read().decode()
    finally:
        tokens.stop()
    worker_page = worker.metrics()
    scraped = {s.name for page in (worker_page, token_page)
               for fam in text_string_to_metric_families(page) for s in fam.samples}
    prod = Rendered("prod", render(K8S / "overlays" / "prod"))
    (rule,) = prod.of_kind("PrometheusRule")
    used = {n for _, e in [*rule_exprs(rule), *dashboard_exprs(dashboard(prod))] for n in promql_names(e)}
    used |= {n for r in adapter_rules() for n in promql_names(r["seriesQuery"])}
    missing = used - scraped - ONLY_AFTER_A_FALLBACK
    assert not missing, f"alerts/panels use names no scrape returned: {sorted(missing)}"
    assert ONLY_AFTER_A_FALLBACK <= used
