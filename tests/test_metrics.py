"""Observability without processes: multiprocess metric files and their compaction, the
turn tracker (listener figures, latency budget), the human log format, settings, and the
optional OpenTelemetry export (to a collector stub on loopback)."""

from __future__ import annotations

import http.server
import itertools
import logging
import threading
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families

from agent import metrics as parley_metrics
from agent.logs import HumanFormatter
from agent.report import TurnMetrics, TurnTracker
from agent.settings import Settings, SettingsError


def dead_pid() -> int:
    return next(p for p in itertools.count(4_100_000) if not psutil.pid_exists(p))


def write(path: Path, typ: str, pid: int, metric: str, sample: str, labels: dict[str, str], value: float,
          mode: str = "") -> None:
    """One value as prometheus_client's multiprocess mode stores it for process `pid`."""
    name = f"{typ}_{mode}_{pid}.db" if mode else f"{typ}_{pid}.db"
    d = MmapedDict(str(path / name))
    d.write_value(mmap_key(metric, sample, list(labels), list(labels.values()), "help"), value, 0.0)
    d.close()


def scrape(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def job_files(path: Path, pid: int, *, completed: float, active: float, observed: float) -> None:
    write(path, "counter", pid, "parley_calls", "parley_calls_total", {"outcome": "completed"}, completed)
    write(path, "gauge", pid, "parley_calls_active", "parley_calls_active", {}, active, mode="livesum")
    write(path, "histogram", pid, "parley_turn_latency_seconds", "parley_turn_latency_seconds_bucket",
          {"stage": "e2e", "le": "1.0"}, observed)
    write(path, "histogram", pid, "parley_turn_latency_seconds", "parley_turn_latency_seconds_sum",
          {"stage": "e2e"}, 0.5 * observed)


COMPLETED = ("parley_calls_total", (("outcome", "completed"),))
ACTIVE = ("parley_calls_active", ())
E2E_COUNT = ("parley_turn_latency_seconds_count", (("stage", "e2e"),))


def test_compaction_keeps_dead_processes_counts_and_drops_their_live_gauges(tmp_path: Path):
    gone1, gone2 = dead_pid(), dead_pid() + 1
    while psutil.pid_exists(gone2):
        gone2 += 1
    alive = psutil.Process().pid  # this process: still running a "call"
    job_files(tmp_path, gone1, completed=2, active=1, observed=3)  # killed mid-call: active stuck at 1
    job_files(tmp_path, gone2, completed=1, active=0, observed=1)
    job_files(tmp_path, alive, completed=0, active=1, observed=2)
    before = scrape(tmp_path)
    assert before[ACTIVE] == 2, "plain multiprocess mode counts the killed process's call forever"

    compactor = parley_metrics.Compactor(tmp_path)
    compactor.compact()
    after = scrape(tmp_path)
    assert after[COMPLETED] == before[COMPLETED] == 3
    assert after[E2E_COUNT] == before[E2E_COUNT] == 6
    assert after[ACTIVE] == 1, "only the live process's call is active"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if str(gone1) in n or str(gone2) in n], names
    assert "counter_archive.db" in names and "histogram_archive.db" in names

    # A later call's process exits too: folded into the same archive, nothing lost.
    gone3 = gone2 + 1
    while psutil.pid_exists(gone3):
        gone3 += 1
    job_files(tmp_path, gone3, completed=4, active=0, observed=5)
    assert compactor.compact() == 3
    again = scrape(tmp_path)
    assert again[COMPLETED] == 7 and again[E2E_COUNT] == 11 and again[ACTIVE] == 1
    assert compactor.compact() == 0, "nothing left to fold"


def test_metrics_server_serves_the_files(tmp_path: Path):
    from harness.devstack import free_port

    job_files(tmp_path, dead_pid(), completed=5, active=1, observed=2)
    server = parley_metrics.MetricsServer(tmp_path, "127.0.0.1", free_port())
    server.start()
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[COMPLETED] == 5 and samples[E2E_COUNT] == 2
    assert samples.get(ACTIVE, 0) == 0


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def turn(**kw: float) -> TurnMetrics:
    return TurnMetrics(user_text="q", agent_text="a", **kw)


def test_listener_figure_lands_on_its_turn_and_in_the_histogram():
    tracker = TurnTracker("room", "caller", budget_ms=1500)
    sent: list[tuple[float | None, int]] = []
    tracker.on_turn = lambda t, seq: sent.append((t.listener_latency_ms, seq))
    before = sample("parley_turn_latency_seconds_count", stage="listener")
    # Usually the figure arrives while the reply plays: before the turn is recorded.
    tracker._pending_user = t1 = turn(end_of_utterance_delay_ms=300, e2e_latency_ms=900)
    assert tracker.listener(1012.4, seq=1) is t1
    tracker._pending_user = None
    tracker.record(t1)
    assert t1.listener_latency_ms == 1012.4 and t1.stages()["network"] == 112.4
    assert sent == [(1012.4, 1)], "the caller's page gets the stages with its own turn number"
    # A short reply may be recorded first; the figure still finds it.
    t2 = turn(e2e_latency_ms=700)
    tracker.record(t2)
    assert tracker.listener(800, seq=2) is t2
    # A figure with no turn waiting for it is dropped, not put on the wrong turn.
    assert tracker.listener(900, seq=3) is None
    assert tracker.listener(-5) is None and tracker.listener(float("nan")) is None
    assert sample("parley_turn_latency_seconds_count", stage="listener") == before + 2


def test_turn_over_budget_is_logged_once_and_counted_by_slowest_stage(caplog: pytest.LogCaptureFixture):
    tracker = TurnTracker("room", "caller", budget_ms=1000)
    before_llm = sample("parley_turn_budget_exceeded_total", stage="llm_ttft")
    before_net = sample("parley_turn_budget_exceeded_total", stage="network")
    with caplog.at_level(logging.WARNING, logger="parley.report"):
        slow = turn(end_of_utterance_delay_ms=250, stt_duration_ms=180, llm_ttft_ms=820, tts_ttfb_ms=90,
                    e2e_latency_ms=1300)
        tracker.record(slow)
        tracker.listener(1600)  # the caller's figure arrives later: no second count
        fast = turn(end_of_utterance_delay_ms=250, llm_ttft_ms=200, e2e_latency_ms=600)
        tracker.record(fast)
        tracker.listener(1450)  # heard late although the server was fast: the network's share
    assert slow.over_budget == "llm_ttft" and fast.over_budget == "network"
    warnings = [r.getMessage() for r in caplog.records if "over budget" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "llm_ttft=820ms" in warnings[0] and "1300 ms > 1000 ms" in warnings[0]
    assert sample("parley_turn_budget_exceeded_total", stage="llm_ttft") == before_llm + 1
    assert sample("parley_turn_budget_exceeded_total", stage="network") == before_net + 1


def test_turn_stages_are_observed():
    tracker = TurnTracker("room", "caller")
    stages = ("end_of_utterance", "stt", "llm_ttft", "tts_ttfb", "e2e")
    before = {s: sample("parley_turn_latency_seconds_count", stage=s) for s in stages}
    interrupted = sample("parley_interruptions_total")
    t = turn(end_of_utterance_delay_ms=250, stt_duration_ms=180, llm_ttft_ms=150, tts_ttfb_ms=90,
             e2e_latency_ms=700)
    t.interrupted = True
    tracker.record(t)
    assert all(sample("parley_turn_latency_seconds_count", stage=s) == before[s] + 1 for s in stages)
    assert sample("parley_turn_latency_seconds_sum", stage="e2e") >= 0.7
    assert sample("parley_interruptions_total") == interrupted + 1


def test_call_outcome_labels_are_bounded():
    before = sample("parley_calls_total", outcome="error")
    parley_metrics.CALLS_ACTIVE.inc()
    parley_metrics.call_ended("room-1234-anything")  # never a new label value
    assert sample("parley_calls_total", outcome="error") == before + 1
    assert sample("parley_calls_total", outcome="room-1234-anything") == 0


def test_human_log_lines_carry_room_and_participant():
    record = logging.LogRecord("parley.call", logging.INFO, __file__, 1, "call closed reason=%s", ("x",), None)
    record.room, record.participant = "call-1a2b", "caller-9f"
    line = HumanFormatter().format(record)
    assert "[room=call-1a2b participant=caller-9f] call closed reason=x" in line
    assert "\n" not in line and not line.startswith("{")
    plain = logging.LogRecord("parley.worker", logging.INFO, __file__, 1, "registered", (), None)
    assert "[" not in HumanFormatter().format(plain)


def test_observability_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    for var in ("PARLEY_METRICS_PORT", "PARLEY_LATENCY_BUDGET_MS", "PARLEY_LOG_FORMAT", "PARLEY_LOG_LEVEL",
                "OTEL_EXPORTER_OTLP_ENDPOINT", "PARLEY_METRICS_HOST"):
        monkeypatch.delenv(var, raising=False)
    s = Settings.load()
    assert (s.metrics_port, s.latency_budget_ms, s.log_format, s.otel_endpoint) == (9100, 1500, "json", "")
    assert s.metrics_host == "127.0.0.1"
    monkeypatch.setenv("PARLEY_LOG_FORMAT", "Human")
    assert Settings.load().log_format == "human"
    for given, level in (("debug", "DEBUG"), ("Warning", "WARN"), (" error ", "ERROR")):
        monkeypatch.setenv("PARLEY_LOG_LEVEL", given)
        assert Settings.load().log_level == level
    monkeypatch.setenv("PARLEY_LOG_LEVEL", "loud")
    with pytest.raises(SettingsError, match="PARLEY_LOG_LEVEL"):
        Settings.load()
    monkeypatch.delenv("PARLEY_LOG_LEVEL")
    monkeypatch.setenv("PARLEY_LATENCY_BUDGET_MS", "0")
    with pytest.raises(SettingsError, match="PARLEY_LATENCY_BUDGET_MS"):
        Settings.load()
    monkeypatch.delenv("PARLEY_LATENCY_BUDGET_MS")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        Settings.load().check_providers()


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_turn_spans_reach_an_otlp_collector_only_when_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from livekit.agents.telemetry import set_tracer_provider, tracer
    from opentelemetry import trace as trace_api

    from agent import tracing

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracing.setup(Settings.load()) is None
    with tracer.start_as_current_span("parley-test-off") as span:
        assert not span.is_recording(), "no endpoint: the framework's spans stay no-ops"

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    previous = tracer._tracer_provider
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{httpd.server_port}")
        provider = tracing.setup(Settings.load())
        assert provider is not None
        with tracer.start_as_current_span("user_turn") as span:
            assert span.is_recording()
            span.set_attribute("parley.test", "yes")
        assert provider.force_flush(5000)
        paths = [p for p, _ in _Collector.received]
        assert "/v1/traces" in paths, paths
        body = b"".join(b for p, b in _Collector.received if p == "/v1/traces")
        assert b"user_turn" in body and b"parley-worker" in body
        provider.shutdown()
    finally:
        set_tracer_provider(previous if previous is not None else trace_api.NoOpTracerProvider())
        httpd.shutdown()
        httpd.server_close()


def test_topics_match_the_web_app():
    call_ts = (Path(__file__).resolve().parent.parent / "frontend" / "src" / "call.ts").read_text()
    assert f"'{parley_metrics.LISTENER_TOPIC}'" in call_ts and f"'{parley_metrics.TURN_TOPIC}'" in call_ts


def test_call_outcomes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from livekit.agents.voice.events import CloseEvent, CloseReason

    from agent.callstate import Call

    monkeypatch.chdir(tmp_path)
    settings = Settings.load()

    def closed(reason: CloseReason, *, on_purpose: bool = False) -> Call:
        call = Call(settings)
        call.session = object()  # type: ignore[assignment]  # a session was started
        if on_purpose:
            call._begin_end("end_call tool")
        call._on_close(CloseEvent(reason=reason))
        return call

    assert Call(settings).outcome() == "rejected", "no session: nobody talked"
    assert closed(CloseReason.PARTICIPANT_DISCONNECTED).outcome() == "caller_hangup"
    assert closed(CloseReason.USER_INITIATED, on_purpose=True).outcome() == "completed"
    assert closed(CloseReason.JOB_SHUTDOWN).outcome() == "agent_ended"
    assert closed(CloseReason.ERROR).outcome() == "error"
    assert closed(CloseReason.PARTICIPANT_DISCONNECTED).outcome("job crashed") == "error"
    assert set(parley_metrics.OUTCOMES) == {"completed", "caller_hangup", "agent_ended", "error", "rejected"}
