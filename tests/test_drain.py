"""Graceful drain and recovery, with real processes on loopback: livekit-server,
`python -m agent start` workers and parley-call callers.

- SIGTERM mid-call: the call keeps getting answers until it ends, a call placed after
  the SIGTERM goes to the other worker, the draining worker writes the report and
  exits 0 (contract: drain timeout from PARLEY_DRAIN_TIMEOUT).
- livekit-server stopped and started again: the surviving worker re-registers by
  itself and answers the next call; then a drain timeout shorter than that call cuts
  it, the report is still written and the worker still exits 0.

Timelines are printed (pytest -s) and written to test-output/drain-timeline.json.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness.devstack import Call, LiveKitServer, Worker
from tests.conftest import records, wait_for

pytestmark = pytest.mark.e2e

# Several workers share this host, so each counts its calls instead of reading the
# host's CPU (agent/load.py), and keeps one warm job process ready.
WORKER_ENV = {"PARLEY_LOAD_CPU": "0", "PARLEY_IDLE_PROCESSES": "1", "PARLEY_MAX_CALLS": "2"}
SHORT_DRAIN_S = 3
RUN = secrets.token_hex(3)  # room names unique to this run (reports accumulate in test-output/)

_state: dict[str, Any] = {}
_timeline: dict[str, float] = {}






def dispatched(w: Worker, room: str) -> bool:
    # The room is a log context field of the job's records (ctx.log_context_fields).
    return any(r["message"].startswith("call dispatched") and r.get("room") == room for r in records(w))


def reports_for(report_dir: Path, room: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in report_dir.glob(f"{room}-*.json")]


def say(msg: str) -> None:
    print(f"[drain] {msg}", flush=True)


@pytest.fixture(scope="module")
def server(out_dir: Path):
    s = LiveKitServer.create().start(out_dir / "logs" / "drain")
    yield s
    s.stop()
    for w in _state.values():
        if isinstance(w, Worker) and w.proc is not None:
            try:  # the whole process group: job processes too
                os.killpg(w.proc.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    (out_dir / "drain-timeline.json").write_text(json.dumps(_timeline, indent=2))


def worker_env(server: LiveKitServer, report_dir: Path, drain_s: int) -> dict[str, str]:
    return {**server.env(), **WORKER_ENV, "PARLEY_DRAIN_TIMEOUT": str(drain_s),
            "PARLEY_REPORT_DIR": str(report_dir)}


def test_sigterm_lets_the_call_finish_and_sends_new_calls_elsewhere(server, fixtures, out_dir):
    logs = out_dir / "logs" / "drain"
    x_reports, y_reports = out_dir / "reports" / "drain-x", out_dir / "reports" / "drain-y"
    x = Worker(env=worker_env(server, x_reports, 120)).start(logs, name="drain-x")
    _state["x"] = x
    question = fixtures / "capital_france.wav"

    # The call lands on X, the only worker; a second worker joins while it runs. Y
    # keeps no warm process (it loads the models when a call comes), so it registers
    # in a few seconds and the SIGTERM below comes early in the call.
    c1 = Call(server, [question, question], room=f"drain-c1-{RUN}", timeout=90).start()
    if not wait_for(lambda: dispatched(x, c1.room), 60):
        pytest.fail(f"the first call never reached worker X: caller {c1.describe()}")
    y_env = {**worker_env(server, y_reports, SHORT_DRAIN_S), "PARLEY_IDLE_PROCESSES": "0"}
    y = Worker(env=y_env).start(logs, name="drain-y", wait=False)
    _state["y"], _state["y_reports"] = y, y_reports
    assert y.proc is not None and y.proc.wait_log("registered worker", 120), "worker Y did not register"
    assert wait_for(lambda: c1.of("greeting"), 60), f"no greeting on the first call: {c1.stderr}"
    assert c1.running() and len(c1.of("turn")) < 2, "the call ended before the test could SIGTERM mid-call"

    assert x.proc is not None
    t_term = time.monotonic()
    x.proc.popen.send_signal(signal.SIGTERM)
    assert wait_for(lambda: any(r["message"] == "draining worker" for r in records(x)), 10)

    # A call placed after the SIGTERM goes to the other worker.
    c2 = Call(server, [question], room=f"drain-c2-{RUN}", timeout=60).start()
    assert c1.wait() == 0, c1.describe()
    t_c1_done = time.monotonic()
    try:
        rc = x.proc.popen.wait(60)
    except Exception:
        pytest.fail(f"the draining worker did not exit:\n{x.proc.log()[-3000:]}")
    t_exit = time.monotonic()
    assert c2.wait() == 0, c2.describe()

    assert rc == 0, f"draining worker exited with {rc}"
    assert dispatched(y, c2.room) and not dispatched(x, c2.room), "the draining worker took a new call"
    # Both turns answered in full while X drains. What Whisper hears of each turn is not this
    # test's subject (the first one runs while Y loads its models, and was once heard as "The
    # capital unfairness"): one answer naming Paris shows the call still reaches the models.
    assert len(c1.answers) == 2 and all(a.strip() for a in c1.answers), c1.answers
    assert any("paris" in a.lower() for a in c1.answers), c1.answers
    after = [t for t, _ in c1.of("turn") if t > t_term]
    assert after, "no answer reached the caller after the SIGTERM"
    assert "paris" in c2.answers[0].lower(), c2.answers

    (report,) = reports_for(x_reports, c1.room)
    answered = [t for t in report["turns"] if t["user_text"]]  # the greeting is a turn too
    assert len(answered) == 2 and all(t["agent_text"].strip() for t in answered), report["turns"]
    assert any("paris" in t["agent_text"].lower() for t in answered), report["turns"]
    _timeline.update(sigterm_to_last_call_done_s=round(t_c1_done - t_term, 2),
                     last_call_done_to_exit_s=round(t_exit - t_c1_done, 2),
                     sigterm_to_exit_s=round(t_exit - t_term, 2),
                     answers_after_sigterm=len(after))
    say(f"SIGTERM → last call done {t_c1_done - t_term:.1f}s → exit(0) {t_exit - t_c1_done:.1f}s later "
        f"({len(after)} answer(s) after SIGTERM)")


def test_server_restart_reregisters_then_drain_timeout_still_reports(server, fixtures, out_dir):
    y: Worker | None = _state.get("y")
    if y is None or y.proc is None or y.proc.popen.poll() is not None:
        pytest.fail("needs worker Y from test_sigterm_lets_the_call_finish_and_sends_new_calls_elsewhere")
    registered = re.compile(r'"message": "registered worker"')
    before = len(registered.findall(y.proc.log()))

    t_stop = time.monotonic()
    server.stop()
    t_down = time.monotonic()
    assert wait_for(lambda: "failed to connect to livekit" in y.proc.log()
                    or "worker connection closed" in y.proc.log(), 30), "worker did not notice"
    server.start(out_dir / "logs" / "drain")
    t_up = time.monotonic()
    assert wait_for(lambda: len(registered.findall(y.proc.log())) > before, 60, 0.05), \
        f"worker did not re-register:\n{y.proc.log()[-2000:]}"
    t_reg = time.monotonic()
    assert y.health("/")[0] == 200
    _timeline.update(server_stop_s=round(t_down - t_stop, 2), reregister_after_server_up_s=round(t_reg - t_up, 2))
    say(f"livekit-server stop took {t_down - t_stop:.1f}s; worker re-registered {t_reg - t_up:.2f}s "
        "after the server listened again")

    # The next call works; a SIGTERM during it, with a drain timeout shorter than the
    # rest of the call, cuts it: the report is still written and the exit code is 0.
    question = fixtures / "capital_france.wav"
    c3 = Call(server, [question, question], room=f"drain-c3-{RUN}", timeout=60).start()
    assert wait_for(lambda: c3.of("turn"), 90), f"no answer after the server restart: {c3.stderr}"
    assert "paris" in c3.answers[0].lower(), c3.answers
    assert dispatched(y, c3.room)
    t_term = time.monotonic()
    y.proc.popen.send_signal(signal.SIGTERM)
    rc = y.proc.popen.wait(SHORT_DRAIN_S + 30)
    t_exit = time.monotonic()
    c3.wait()
    assert rc == 0, f"worker exited with {rc} after its drain timeout"
    assert "drain timed out, forcing shutdown" in y.proc.log()
    reports = wait_for(lambda: reports_for(_state["y_reports"], c3.room), 5)
    assert reports and reports[0]["turns"], "no session report for the call cut by the drain timeout"
    _timeline.update(drain_timeout_s=SHORT_DRAIN_S, sigterm_to_forced_exit_s=round(t_exit - t_term, 2))
    say(f"drain timeout {SHORT_DRAIN_S}s: SIGTERM → exit(0) in {t_exit - t_term:.1f}s, report written")
