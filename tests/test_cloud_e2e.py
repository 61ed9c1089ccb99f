"""Cloud providers through real calls: parley-call → livekit-server → a worker configured
for the cloud, with the providers served by local fakes (tests/fakes) on loopback.

Three workers, six calls in all (each costs ~15-30 s on 2 cores):
- cascade: Deepgram STT + OpenAI LLM + OpenAI TTS; a plain question, then end_call;
- every cloud provider down: the local stack answers the same turn (HTTP 500, then a stall);
- realtime: barge-in on a long answer, then the realtime model down at call start.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from livekit import api

from harness.devstack import BIN, ROOT, LiveKitServer, Worker
from tests.conftest import CallResult, run_call, wait_report
from tests.fakes import DeepgramFake, OpenAIFake, RealtimeFake, closed_port

pytestmark = pytest.mark.e2e




def start_worker(server: LiveKitServer, out_dir: Path, report_dir: Path, agent: str, **env: str) -> Worker:
    w = Worker(env={**server.env(), "PARLEY_REPORT_DIR": str(report_dir), "PARLEY_IDLE_PROCESSES": "1",
                    "PARLEY_LOAD_CPU": "0", "PARLEY_AGENT_NAME": agent, **env})
    return w.start(out_dir / "logs", name=agent)


def call(server: LiveKitServer, agent: str, room: str, *clips: Path, extra: tuple[str, ...] = ()) -> CallResult:
    args = ["--agent", agent, "--room", room, "--timeout", "30", *extra]
    for c in clips:
        args += ["--audio", str(c)]
    return run_call(server, *args)


def usage(report: dict, kind: str, provider: str) -> dict:
    found = [u for u in report["usage"] or [] if u["type"] == kind and provider in u["provider"]]
    assert found, (kind, provider, report["usage"])
    return found[0]


def speaking_after(report: dict, t: float) -> float | None:
    """When the agent's first audio after `t` went out (agent_state_changed → speaking)."""
    times = [e["created_at"] for e in report["events"]
             if e["type"] == "agent_state_changed" and e["new_state"] == "speaking" and e["created_at"] >= t]
    return min(times, default=None)


# --- cascade: Deepgram + OpenAI LLM + OpenAI TTS --------------------------------------------

@pytest.fixture(scope="module")
def cloud(livekit_server, out_dir, report_dir):
    dg, oa = DeepgramFake().start(), OpenAIFake().start()
    w = start_worker(livekit_server, out_dir, report_dir, "parley-cloud",
                     PARLEY_STT="deepgram", PARLEY_LLM="openai", PARLEY_TTS="openai",
                     DEEPGRAM_API_KEY="dg-e2e", DEEPGRAM_BASE_URL=dg.base_url,
                     OPENAI_API_KEY="sk-e2e", OPENAI_BASE_URL=oa.base_url,
                     PARLEY_LLM_MODEL="gpt-e2e", PARLEY_TTS_VOICE="nova", PARLEY_TTS_MODEL="tts-e2e",
                     PARLEY_DEEPGRAM_MODEL="nova-2", PARLEY_DEEPGRAM_LANGUAGE="en-GB")
    yield dg, oa, w
    w.stop()
    dg.stop()
    oa.stop()


def test_cloud_cascade_answers_through_the_fakes(livekit_server, cloud, fixtures, report_dir):
    dg, oa, _ = cloud
    dg.transcripts.extend(["What is the capital of France?"])
    room = f"t-cloud-{secrets.token_hex(3)}"
    r = call(livekit_server, "parley-cloud", room, fixtures / "capital_france.wav")
    assert r.rc == 0, (r.rc, r.stderr, r.events)
    assert "parley" in r.greeting["agent_text"].lower()
    (turn,) = r.turns
    assert turn["user_transcript"] == "What is the capital of France?"  # Deepgram's words
    assert "paris" in turn["agent_text"].lower()  # the fake LLM's answer
    assert turn["agent_audio_s"] > 0.5  # the fake TTS's audio reached the caller

    # our configuration reached each provider
    (listen,) = dg.listen_requests
    assert (listen["model"], listen["language"], listen["authorization"]) == ("nova-2", "en-GB", "Token dg-e2e")
    assert listen["encoding"] == "linear16" and listen["sample_rate"] == "16000"
    assert dg.audio_bytes > 16000 * 2 * 3  # the caller's audio streamed to Deepgram
    chat = oa.chat_requests()[-1]
    assert chat["model"] == "gpt-e2e" and chat["stream"] is True
    assert chat["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert {t["function"]["name"] for t in chat["tools"]} == {"end_call", "lookup"}
    assert all(r.headers["Authorization"] == "Bearer sk-e2e" for r in oa.requests)
    speech = oa.speech_requests()
    assert {(s["model"], s["voice"], s["response_format"]) for s in speech} == {("tts-e2e", "nova", "pcm")}
    assert any("Paris" in s["input"] for s in speech)

    report = wait_report(report_dir, room)
    assert usage(report, "stt_usage", "Deepgram")["audio_duration"] > 3
    llm_u = usage(report, "llm_usage", "127.0.0.1")
    assert llm_u["model"] == "gpt-e2e" and llm_u["input_tokens"] > 0 and llm_u["output_tokens"] > 0
    tts_u = usage(report, "tts_usage", "127.0.0.1")
    assert tts_u["characters_count"] >= len("The capital of France is Paris.") and tts_u["output_tokens"] > 0
    assert report["providers"]["llm"].startswith("127.0.0.1") and report["providers"]["fallbacks"] == []


async def watch_room(server: LiveKitServer, room: str, limit: float) -> float | None:
    """Poll the server until `room` has existed and is gone; returns when it went."""
    lk = api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret)
    seen, deadline = False, time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
            if rooms.rooms:
                seen = True
            elif seen:
                return time.time()
            await asyncio.sleep(0.2)
    finally:
        await lk.aclose()
    return None


def test_end_call_tool_ends_the_room(livekit_server, cloud, fixtures, report_dir):
    dg, oa, w = cloud
    dg.transcripts.extend(["Thanks, that is all. Goodbye."])
    room = f"t-endcall-{secrets.token_hex(3)}"
    cmd = [str(BIN / "parley-call"), "--url", livekit_server.url, "--api-key", livekit_server.api_key,
           "--api-secret", livekit_server.api_secret, "--json", "--agent", "parley-cloud", "--room", room,
           "--timeout", "12", "--audio", str(fixtures / "capital_france.wav"),
           "--audio", str(fixtures / "silence_5s.wav")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    gone_at = asyncio.run(watch_room(livekit_server, room, 90))
    caller_still_there = proc.poll() is None
    out, err = proc.communicate(timeout=90)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert gone_at is not None, (out, err)
    # The caller was still on the line (playing its second clip) when the room went away.
    assert caller_still_there, (out, err)
    goodbye_turn = [e for e in events if e["event"] == "turn"][0]
    assert "goodbye" in goodbye_turn["agent_text"].lower(), events
    report = wait_report(report_dir, room)
    assert report["close_reason"] == "CR_USER_INITIATED"  # the agent ended it, not a hang-up
    calls = [i for i in report["chat_history"]["items"] if i.get("type") == "function_call"]
    assert [c["name"] for c in calls] == ["end_call"]
    assert "end_call tool" in w.proc.log()


# --- every cloud provider down ---------------------------------------------------------------

@pytest.fixture(scope="module")
def down(livekit_server, out_dir, report_dir):
    oa = OpenAIFake().start()
    oa.llm_mode = oa.tts_mode = "http500"
    w = start_worker(livekit_server, out_dir, report_dir, "parley-down",
                     PARLEY_STT="deepgram", PARLEY_LLM="openai", PARLEY_TTS="openai",
                     DEEPGRAM_API_KEY="dg-e2e", DEEPGRAM_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1",
                     OPENAI_API_KEY="sk-e2e", OPENAI_BASE_URL=oa.base_url, PARLEY_FALLBACK_TIMEOUT="2")
    yield oa, w
    w.stop()
    oa.stop()


@pytest.mark.parametrize("llm_failure", ["http500", "stall"])
def test_cloud_down_local_stack_answers_the_same_turn(livekit_server, down, fixtures, report_dir, llm_failure):
    oa, _ = down
    oa.llm_mode = llm_failure
    oa.stall_s = 20
    room = f"t-down-{llm_failure}-{secrets.token_hex(3)}"
    r = call(livekit_server, "parley-down", room, fixtures / "capital_france.wav")
    assert r.rc == 0, r.stderr
    assert "parley" in r.greeting["agent_text"].lower()  # Piper spoke it: OpenAI TTS answered 500
    (turn,) = r.turns
    assert "capital" in turn["user_transcript"].lower()  # Whisper heard it: Deepgram refused
    assert "paris" in turn["agent_text"].lower()  # SmolLM2 answered it: the OpenAI LLM failed
    assert turn["agent_audio_s"] > 0.5

    report = wait_report(report_dir, room)
    failed = {(e["stage"], e["available"]) for e in report["providers"]["fallbacks"]}
    assert {("stt", False), ("llm", False), ("tts", False)} <= failed
    assert usage(report, "llm_usage", "local")["output_tokens"] > 0
    # Failure → first local audio, from the framework's own per-turn timings: the LLM's time
    # to first token includes the failed attempt (~1 ms for a 500, the 2 s timeout for a
    # stall), then Piper's time to first audio.
    t = next(t for t in report["turns"] if t["user_text"])
    failed_after_ms = 2000 if llm_failure == "stall" else 0
    local_first_token = t["llm_ttft_ms"] - failed_after_ms
    assert t["llm_ttft_ms"] >= failed_after_ms
    print(f"\nfallback ({llm_failure}): cloud LLM failed -> first local audio "
          f"{local_first_token + t['tts_ttfb_ms']:.0f} ms (SmolLM2 first token {local_first_token:.0f} ms + "
          f"Piper first audio {t['tts_ttfb_ms']:.0f} ms); end of speech -> agent audio {t['e2e_latency_ms']} ms "
          f"(caller-measured {turn['turn_latency_ms']} ms)")


# --- realtime -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rt(livekit_server, out_dir, report_dir):
    fake = RealtimeFake().start()
    w = start_worker(livekit_server, out_dir, report_dir, "parley-rt", PARLEY_PIPELINE="realtime",
                     OPENAI_API_KEY="sk-rt", OPENAI_BASE_URL=fake.base_url, PARLEY_REALTIME_MODEL="rt-e2e",
                     PARLEY_REALTIME_VOICE="verse", PARLEY_REALTIME_SILENCE_MS="700", PARLEY_FALLBACK_TIMEOUT="2")
    yield fake, w
    w.stop()
    fake.stop()


def test_realtime_answers_and_is_interrupted_by_the_caller(livekit_server, rt, fixtures, report_dir):
    fake, _ = rt
    fake.transcripts.extend(["I am planning a trip to London, what should I pack?"])
    fake.default_transcript = "Stop, stop, wait a second."
    room = f"t-rt-{secrets.token_hex(3)}"
    r = call(livekit_server, "parley-rt", room, fixtures / "long_question.wav", fixtures / "stop_interrupt.wav",
             extra=("--barge-in", "--barge-in-delay", "0.8"))
    assert r.rc == 0, r.stderr
    first, second = r.turns
    assert first.get("interrupted") is True and first["turn_latency_ms"] is not None
    # the transcript stops where the caller stopped hearing it (the full answer ends with an umbrella)
    assert "umbrella" not in first["agent_text"].lower()
    assert first["barge_in_stop_ms"] < 2000, first
    assert "stop" in second["agent_text"].lower() and second["agent_audio_s"] > 0.3

    # configuration that reached the server
    (conn,) = fake.requests
    assert conn.query["model"] == "rt-e2e" and conn.headers["Authorization"] == "Bearer sk-rt"
    audio = fake.session["audio"]
    td = audio["input"]["turn_detection"]
    assert (td["type"], td["silence_duration_ms"], td["interrupt_response"]) == ("server_vad", 700, True)
    assert audio["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    assert audio["output"]["voice"] == "verse" and fake.session["model"] == "rt-e2e"
    assert "lookup" in {t["name"] for t in fake.session.get("tools", [])}
    # barge-in: the answer being spoken was cancelled and cut where the caller heard it stop
    assert fake.responses[0]["status"] == "cancelled"
    truncates = fake.events("conversation.item.truncate")
    assert truncates and 0 < truncates[0]["audio_end_ms"] < fake.responses[0]["audio_s_sent"] * 1000
    print(f"\nrealtime barge-in: agent audio stopped {first['barge_in_stop_ms']} ms after the caller started; "
          f"server got {[e['type'] for e in fake.client_events if e['type'].startswith(('response.', 'conversation.item.truncate'))]}, "
          f"truncate audio_end_ms={truncates[0]['audio_end_ms']} of {fake.responses[0]['audio_s_sent'] * 1000:.0f} sent")

    report = wait_report(report_dir, room)
    rt_usage = usage(report, "llm_usage", "127.0.0.1")
    assert rt_usage["model"] == "rt-e2e" and rt_usage["input_audio_tokens"] > 0 and rt_usage["output_audio_tokens"] > 0


def test_realtime_down_hands_the_call_to_the_local_pipeline(livekit_server, rt, fixtures, report_dir):
    fake, w = rt
    fake.mode = "http500"
    fake.default_transcript = "What is the capital of France?"
    room = f"t-rtdown-{secrets.token_hex(3)}"
    r = call(livekit_server, "parley-rt", room, fixtures / "capital_france.wav")
    assert r.rc == 0, r.stderr
    (turn,) = r.turns
    assert "capital" in turn["user_transcript"].lower() and "paris" in turn["agent_text"].lower()
    assert "local pipeline takes the call over" in w.proc.log()
    report = wait_report(report_dir, room)
    assert report["close_reason"] != "CR_ERROR"
