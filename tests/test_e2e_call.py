"""End to end: parley-call → real livekit-server → real worker with the offline stack."""

from __future__ import annotations

import json
import secrets

import pytest

from tests.conftest import wait_report

pytestmark = pytest.mark.e2e




def test_greeting_then_answers_capital_of_france(call, worker, fixtures, report_dir):
    room = f"t-capital-{secrets.token_hex(3)}"
    r = call("--room", room, "--audio", str(fixtures / "capital_france.wav"))
    assert r.rc == 0, r.stderr
    assert "parley" in r.greeting["agent_text"].lower()
    assert r.greeting["latency_ms"] is not None
    (turn,) = r.turns
    assert "capital" in turn["user_transcript"].lower()
    assert "paris" in turn["agent_text"].lower()
    assert turn["turn_latency_ms"] is not None and turn["turn_latency_ms"] > 0
    assert turn["agent_audio_s"] > 0.3

    # The caller hung up: the worker wrote the session report with per-turn metrics.
    report = wait_report(report_dir, room)
    roles = [i.get("role") for i in report["chat_history"]["items"] if i.get("type") == "message"]
    assert roles[:1] == ["assistant"] and "user" in roles
    answered = [t for t in report["turns"] if t["user_text"]]
    assert answered and "paris" in answered[0]["agent_text"].lower(), report["turns"]
    t0 = answered[0]
    for key in ("end_of_utterance_delay_ms", "stt_duration_ms", "llm_ttft_ms", "tts_ttfb_ms"):
        assert t0[key] is not None and t0[key] >= 0, (key, t0)
    # The STT figure comes from the recognizer's own metrics, not from the session's deprecated
    # metrics event, which logs a warning for every call.
    assert "is deprecated" not in worker.proc.log()
    assert report["usage"], "per-model usage missing from the report"
    # Events hold what happened once each, not the usage totals repeated every second.
    kinds = {e["type"] for e in report["events"]}
    assert {"conversation_item_added", "user_input_transcribed", "close"} <= kinds, kinds
    assert "session_usage_updated" not in kinds


def test_remembers_name_across_turns(call, fixtures):
    r = call("--audio", str(fixtures / "name_memory_1.wav"), "--audio", str(fixtures / "name_memory_2.wav"))
    assert r.rc == 0, r.stderr
    first, second = r.turns
    assert "alice" in first["user_transcript"].lower()
    assert "name" in second["user_transcript"].lower()
    assert "alice" in second["agent_text"].lower()


def test_phone_quality_ulaw_is_understood(call, fixtures):
    r = call("--audio", str(fixtures / "capital_france_8k_ulaw.wav"))
    assert r.rc == 0, r.stderr
    (turn,) = r.turns
    assert "paris" in turn["agent_text"].lower()


def test_no_reply_to_silence_or_noise(call, fixtures):
    r = call("--timeout", "6", "--audio", str(fixtures / "silence_5s.wav"),
             "--audio", str(fixtures / "pink_noise_5s.wav"))
    assert r.rc == 0, r.stderr
    assert len(r.turns) == 2
    for turn in r.turns:
        assert turn["agent_text"] == "" and turn["turn_latency_ms"] is None, turn


def test_barge_in_stops_agent_audio(call, fixtures, report_dir):
    room = f"t-barge-{secrets.token_hex(3)}"
    r = call("--room", room, "--barge-in", "--barge-in-delay", "0.8",
             "--audio", str(fixtures / "long_question.wav"),
             "--audio", str(fixtures / "stop_interrupt.wav"))
    assert r.rc == 0, r.stderr
    interrupted = r.turns[0]
    assert interrupted.get("interrupted") is True
    # Agent audio stops well before the caller's 2 s "stop, stop, wait a second" is over.
    assert interrupted["barge_in_stop_ms"] < 2000, interrupted
    report = wait_report(report_dir, room)
    assistant = [i for i in report["chat_history"]["items"]
                 if i.get("type") == "message" and i.get("role") == "assistant"]
    cut = [i for i in assistant if i.get("interrupted")]
    assert cut, "history has no interrupted assistant message"
    # The history keeps what was played, not the whole reply: the caller heard 0.8 s of it
    # plus the time the agent took to stop. Bounded at a fast 5 words per second, with
    # 1.5 s of slack for the transcript synchronizer's estimate of where the audio is.
    kept = " ".join(c for c in cut[0]["content"] if isinstance(c, str)).split()
    played_s = 0.8 + interrupted["barge_in_stop_ms"] / 1000
    assert 0 < len(kept) <= 5 * (played_s + 1.5), (kept, played_s)


def test_worker_health_endpoints(worker):
    status, body = worker.health("/")
    assert status == 200 and body == "OK"
    status, body = worker.health("/worker")
    assert status == 200 and json.loads(body)["agent_name"] == "parley"
