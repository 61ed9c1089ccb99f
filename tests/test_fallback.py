"""Fallback: each cloud provider fails the ways real ones do (connection refused, HTTP 500,
stream cut off mid-reply, stall past the timeout) and the local provider behind it, in the
framework's FallbackAdapter as `select_models` wires it, answers the same turn.

LLM: AgentSession in text mode. STT and TTS: the adapters fed real audio / text (Whisper
and Piper do the local work). One real call with every cloud provider down is in
test_cloud_e2e.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import rtc
from livekit.agents import AgentSession, llm, stt, utils

from agent.assistant import ParleyAgent
from agent.providers import LocalModels, select_models
from agent.settings import Settings
from tests.fakes import DeepgramFake, OpenAIFake, RealtimeFake, closed_port

TIMEOUT = 1.5  # PARLEY_FALLBACK_TIMEOUT for these tests
MODES = ["refused", "http500", "close_mid", "stall", "stall_mid"]


@pytest.fixture(scope="module")
def local() -> LocalModels:
    models = LocalModels.load(Settings())
    # one generation first, so a cold llama.cpp is not counted as fallback time
    models.llm.generate([{"role": "user", "content": "Hi"}], lambda _t: None, threading.Event())
    return models


@pytest.fixture(scope="module")
def openai_fake():
    with OpenAIFake() as f:
        f.stall_s = 10
        yield f


@pytest.fixture(scope="module")
def deepgram_fake():
    with DeepgramFake() as f:
        f.stall_s = 10
        yield f


def url_for(fake: OpenAIFake | DeepgramFake, mode: str) -> str:
    return f"http://127.0.0.1:{closed_port()}/v1" if mode == "refused" else fake.base_url


# --- LLM ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_llm_failure_is_answered_by_the_local_llm(mode, local, openai_fake):
    openai_fake.llm_mode = "ok" if mode == "refused" else mode
    settings = Settings(llm="openai", openai_api_key="sk-fb", openai_base_url=url_for(openai_fake, mode),
                        fallback=True, fallback_timeout=TIMEOUT)
    chosen = select_models(settings, local)
    session = AgentSession(llm=chosen.llm)
    await session.start(ParleyAgent(settings, greeting="", tools=[]))
    try:
        t0 = time.monotonic()
        result = await session.run(user_input="What is the capital of France?")
        elapsed = time.monotonic() - t0
        msg = result.expect.next_event().is_message(role="assistant").event().item
    finally:
        await session.aclose()
    assert "paris" in msg.text_content.lower(), msg.text_content
    assert [(e["stage"], e["available"]) for e in chosen.fallbacks.events][:1] == [("llm", False)]
    ttft = msg.metrics.get("llm_node_ttft")
    print(f"\nLLM {mode}: failure -> first local token {ttft:.2f}s, whole answer {elapsed:.2f}s "
          f"({msg.text_content!r})")
    if mode.startswith("stall"):
        assert elapsed >= TIMEOUT  # the stall was waited out, not guessed
    if mode == "close_mid":
        # the words already streamed stay said; the local model answers the whole turn again
        assert msg.text_content.startswith("The ")


# --- STT ---------------------------------------------------------------------------------

def frames(path: Path, lead_silence_s: float) -> Iterator[rtc.AudioFrame]:
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        pcm = b"\0" * int(lead_silence_s * rate) * 2 + w.readframes(w.getnframes())
    step = rate // 50 * 2
    for i in range(0, len(pcm) - step + 1, step):
        yield rtc.AudioFrame(pcm[i:i + step], rate, 1, step // 2)


async def transcribe(adapter: stt.STT, path: Path, lead_silence_s: float) -> list[str]:
    stream = adapter.stream()
    finals: list[str] = []

    async def feed() -> None:
        for f in frames(path, lead_silence_s):
            stream.push_frame(f)
            await asyncio.sleep(0.02)  # real time: stalls are measured on the clock
        for _ in range(100):  # a second of silence lets the VAD close the utterance
            stream.push_frame(rtc.AudioFrame(b"\0" * 640, 16000, 1, 320))
            await asyncio.sleep(0.01)
        stream.end_input()

    feeder = asyncio.create_task(feed())
    async for ev in stream:
        if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and ev.alternatives[0].text.strip():
            finals.append(ev.alternatives[0].text)
    await feeder
    return finals


@pytest.mark.parametrize("mode", MODES)
async def test_stt_failure_is_transcribed_by_whisper(mode, local, deepgram_fake, fixtures):
    deepgram_fake.mode = "ok" if mode == "refused" else mode
    deepgram_fake.failures_at.clear()
    deepgram_fake.transcripts.clear()
    deepgram_fake.default_transcript = "DEEPGRAM WORDS"
    settings = Settings(stt="deepgram", deepgram_api_key="dg-fb", deepgram_base_url=url_for(deepgram_fake, mode),
                        fallback=True, fallback_timeout=TIMEOUT)
    chosen = select_models(settings, local)
    async with utils.http_context.open():
        # 2 s before the question: a call's STT stream opens with the greeting, before the caller talks
        finals = await transcribe(chosen.stt, fixtures / "capital_france.wav", lead_silence_s=2.0)
    text = " ".join(finals).lower()
    assert "DEEPGRAM" not in text.upper(), finals
    assert [(e["stage"], e["available"]) for e in chosen.fallbacks.events][:1] == [("stt", False)]
    if mode in ("refused", "http500", "stall"):
        # failed at connect: Whisper heard it all (base may hear "capital on France")
        assert "capital" in text and "france" in text, finals
    else:
        # cut off mid-utterance: what Deepgram had is lost and Whisper hears the rest, which
        # may be only the last word or two (tiny.en on a fragment: "of a friend") under load
        assert text.strip(), finals
    print(f"\nSTT {mode}: whisper heard {finals}")


# --- TTS ---------------------------------------------------------------------------------

async def synthesize(adapter, text: str) -> tuple[float, set[str]]:
    providers: set[str] = set()
    adapter.on("metrics_collected", lambda m: providers.add(m.metadata.model_provider if m.metadata else "?"))
    seconds = 0.0
    async with adapter.synthesize(text) as stream:
        async for audio in stream:
            seconds += audio.frame.duration
    await asyncio.sleep(0.1)  # metrics are emitted just after the last frame
    return seconds, providers


@pytest.mark.parametrize("mode", ["refused", "http500", "stall"])
async def test_tts_failure_is_spoken_by_piper(mode, local, openai_fake):
    openai_fake.tts_mode = "ok" if mode == "refused" else mode
    settings = Settings(tts="openai", openai_api_key="sk-fb", openai_base_url=url_for(openai_fake, mode),
                        fallback=True, fallback_timeout=TIMEOUT)
    chosen = select_models(settings, local)
    t0 = time.monotonic()
    seconds, providers = await synthesize(chosen.tts, "The capital of France is Paris.")
    assert [(e["stage"], e["available"]) for e in chosen.fallbacks.events][:1] == [("tts", False)]
    assert "local" in providers and seconds > 1.0, (providers, seconds)
    print(f"\nTTS {mode}: {seconds:.2f}s of Piper audio after {time.monotonic() - t0:.2f}s")


@pytest.mark.parametrize("mode", ["close_mid", "stall_mid"])
async def test_tts_cut_mid_sentence_keeps_what_was_heard_then_piper_speaks_on(mode, local, openai_fake):
    """The framework does not repeat audio the caller already heard: the rest of the cut
    sentence is dropped, the next sentence comes from Piper."""
    openai_fake.tts_mode = mode
    settings = Settings(tts="openai", openai_api_key="sk-fb", openai_base_url=openai_fake.base_url,
                        fallback=True, fallback_timeout=TIMEOUT)
    chosen = select_models(settings, local)
    first, _ = await synthesize(chosen.tts, "The capital of France is Paris.")
    second, providers = await synthesize(chosen.tts, "It is a lovely city.")
    assert 0 < first < 0.5, first  # the first 100 ms chunk, then the cut
    assert "local" in providers and second > 0.5, (providers, second)


async def test_fallback_off_uses_the_cloud_provider_alone(local, openai_fake):
    settings = Settings(llm="openai", tts="openai", openai_api_key="sk-fb", openai_base_url=openai_fake.base_url,
                        fallback=False)
    chosen = select_models(settings, local)
    assert type(chosen.llm).__name__ == "LLM" and type(chosen.tts).__name__ == "OpenAITTS"
    assert "fallback" not in chosen.providers["llm"]
    assert chosen.stt is local.stt  # stages left local stay local
    await chosen.aclose()  # the call's cloud clients close with it; the local models stay usable
    assert chosen.llm._client.is_closed()
    assert local.llm.messages(llm.ChatContext()) == []


def test_realtime_replaces_the_cascade(local):
    chosen = select_models(Settings(pipeline="realtime", openai_api_key="sk-rt"), local)
    assert chosen.realtime and type(chosen.llm).__name__ == "RealtimeModel"
    assert chosen.tts is local.tts  # Piper still speaks the fixed phrases


# --- realtime ------------------------------------------------------------------------------

async def test_realtime_dropping_mid_call_hands_over_to_the_local_pipeline(local):
    """The realtime service drops the connection mid-answer and refuses the reconnect: the
    call moves to the local pipeline with its history, apologises, and answers from then on."""
    from agent.session import REALTIME_LOST, build_session

    with RealtimeFake() as fake:
        s = Settings(pipeline="realtime", openai_api_key="sk-rt", openai_base_url=fake.base_url, fallback=True)
        # the worker's own session construction, hand-over included; text mode (no room)
        session = build_session(s, local, select_models(s, local))
        await session.start(ParleyAgent(s, greeting=""))
        try:
            first = await session.run(user_input="What is the capital of France?")
            assert "Paris" in first.expect.next_event().is_message(role="assistant").event().item.text_content
            fake.mode, fake.down_after_close = "close_mid", True
            await session.run(user_input="Tell me about London.")
            for _ in range(100):  # the reconnect is refused, then the hand-over
                if session.current_agent.llm is local.llm:
                    break
                await asyncio.sleep(0.1)
            assert session.current_agent.llm is local.llm

            def said() -> list[str]:
                return [i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"]

            for _ in range(100):  # the apology: the caller had asked something the failed model lost
                if REALTIME_LOST in said():
                    break
                await asyncio.sleep(0.1)
            assert REALTIME_LOST in said(), said()
            third = await session.run(user_input="What is the capital of France?")
            answer = third.expect.next_event().is_message(role="assistant").event().item.text_content
            assert "paris" in answer.lower(), answer
        finally:
            await session.aclose()
    assert len(fake.requests) >= 2  # the first connection, then the refused reconnect
