"""One call cannot take the worker down: a runaway job is killed alone, a failing local
model is heard (one apology) and the call goes on, a report that cannot be written costs
one log line. Real livekit-server, real worker processes (tests/faultworker wraps the
production worker with the faults; nothing in agent/ knows about them)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from agent.settings import DEFAULT_FAILURE_APOLOGY
from harness.devstack import Call, LiveKitServer, Worker
from tests.conftest import run_call, wait_for

pytestmark = pytest.mark.e2e

# Each worker here registers under its own agent name: the session's shared `worker` runs on
# the same livekit-server, and a call dispatched to it would never meet the fault.
FAULT_AGENT = "parley-faults"
HOG_AGENT = "parley-hog"

APOLOGY_WORDS = set(re.findall(r"[a-z]+", DEFAULT_FAILURE_APOLOGY.lower()))


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def fault_worker(livekit_server: LiveKitServer, out_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    # Reports go under a *file*: every write fails (as on a read-only or full volume).
    blocker = tmp_path_factory.mktemp("ro") / "reports"
    blocker.write_text("not a directory")
    w = Worker(module="tests.faultworker", env={
        **livekit_server.env(), "PARLEY_AGENT_NAME": FAULT_AGENT, "PARLEY_TEST_FAULTS": "llm_once", "PARLEY_REPORT_DIR": str(blocker / "sub"),
        "PARLEY_IDLE_PROCESSES": "1", "PARLEY_LOAD_CPU": "0"})
    w.start(out_dir / "logs", name="worker-faults")
    yield w
    w.stop()


def test_local_llm_failure_is_heard_once_and_call_goes_on(livekit_server, fault_worker, fixtures):
    r = run_call(livekit_server, "--agent", FAULT_AGENT, "--audio", str(fixtures / "capital_france.wav"),
                 "--audio", str(fixtures / "name_memory_1.wav"), "--timeout", "60")
    assert r.rc == 0, r.stderr
    first, second = r.turns
    # The first generation raised inside llama.cpp: the caller hears the apology, as audio.
    assert len(words(first["agent_text"]) & APOLOGY_WORDS) >= len(APOLOGY_WORDS) - 2, first
    assert first["agent_audio_s"] > 1.0, first
    # ... and the call goes on: the next turn gets a real answer from the same model.
    assert second["agent_text"] and len(words(second["agent_text"]) & APOLOGY_WORDS) < 4, second
    assert second["agent_audio_s"] > 0.3, second
    log = fault_worker.proc.log()
    assert len(re.findall(r"local llm \(.*\) failed: RuntimeError: injected llama.cpp failure", log)) == 1, log[-4000:]
    assert "Error in _llm_inference_task" not in log, "the failure was logged twice"
    assert fault_worker.proc.popen.poll() is None


def test_report_write_failure_is_one_line_and_call_unaffected(livekit_server, fault_worker, fixtures):
    log_start = len(fault_worker.proc.log())
    room = "ro-" + str(int(time.time() * 1000))
    r = run_call(livekit_server, "--agent", FAULT_AGENT, "--room", room, "--audio", str(fixtures / "capital_france.wav"),
                 "--timeout", "60")
    assert r.rc == 0, r.stderr
    assert r.turns and r.turns[0]["agent_audio_s"] > 0.3, r.turns
    line = wait_for(lambda: [ln for ln in fault_worker.proc.log()[log_start:].splitlines()
                             if "session report not written" in ln and room in ln], 90)
    assert len(line) == 1 and "Not a directory" in line[0], line
    assert "Traceback" not in fault_worker.proc.log()[log_start:].split(line[0])[1][:2000]
    status, _ = fault_worker.health("/")
    assert status == 200


def test_runaway_job_is_killed_alone(livekit_server: LiveKitServer, out_dir: Path, fixtures: Path):
    # Above a job process in a call (~0.6 GB PSS with SmolLM2, ~1 GB with Qwen2.5-0.5B), far below the machine.
    limit = 1800
    w = Worker(module="tests.faultworker", env={
        **livekit_server.env(), "PARLEY_AGENT_NAME": HOG_AGENT, "PARLEY_TEST_FAULTS": "hog:hog-", "PARLEY_JOB_MEMORY_LIMIT_MB": str(limit),
        "PARLEY_TEST_HOG_CAP_MB": "3500", "PARLEY_IDLE_PROCESSES": "2", "PARLEY_MAX_CALLS": "2",
        "PARLEY_LOAD_CPU": "0", "PARLEY_REPORT_DIR": str(out_dir / "reports")})
    w.start(out_dir / "logs", name="worker-hog")
    try:
        assert w.proc is not None
        clip = fixtures / "capital_france.wav"
        clips = [clip, fixtures / "name_memory_1.wav", fixtures / "count_to_five.wav", clip,
                 fixtures / "name_memory_2.wav", clip]
        good = Call(livekit_server, clips, timeout=90, agent=HOG_AGENT).start()
        # The good call is answered before the runaway starts, then keeps going through its kill.
        assert wait_for(lambda: good.of("greeting") or not good.running(), 90), good.describe()
        hog = Call(livekit_server, [fixtures / "silence_5s.wav"], room="hog-" + str(int(time.time())),
                   timeout=30, agent=HOG_AGENT).start()
        killed = w.proc.wait_log(r"process exceeded memory limit, killing it", 120)
        killed_at = time.monotonic()
        assert killed, w.proc.log()[-4000:]
        assert good.wait(240) == 0, good.stderr
        hog.wait(120)
        answered_after = [e for t, e in good.of("turn") if t > killed_at and float(e["agent_audio_s"] or 0) > 0.3]
        assert answered_after, (killed_at, good.events)
        assert w.proc.popen.poll() is None, "the worker died with its job"
        status, _ = w.health("/")
        assert status == 200
        # The worker takes the next call on a fresh job process.
        r = run_call(livekit_server, "--agent", HOG_AGENT, "--audio", str(clip), "--timeout", "60")
        assert r.rc == 0 and r.turns[0]["agent_audio_s"] > 0.3, r.stderr
    finally:
        w.stop()
