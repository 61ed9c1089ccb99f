"""Fast layer: a local model that raises is answered with one apology and the call goes on;
typed chat is bounded, cleaned and paced. Real AgentSessions (agent.session.build_session)
in text mode with the fake providers of tests/fakes/providers.py; no models, no processes."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.room_io import TextInputEvent

from agent.assistant import ParleyAgent
from agent.callstate import Call
from agent.faults import LocalFailures, render_apology
from agent.providers import LocalModels, SessionModels
from agent.session import build_session
from agent.settings import Settings
from agent.textinput import ChatGuard, clean
from tests.fakes.providers import FakeLLM, FakeSTT, FakeTTS, SilentVAD, last_user_text


def said(session: AgentSession) -> list[str]:
    return [i.text_content or "" for i in session.history.items if i.type == "message" and i.role == "assistant"]


async def wait_until(pred, limit: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return bool(pred())


async def test_raising_local_llm_is_one_apology_then_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings()
    state = {"n": 0}

    def respond(ctx):  # type: ignore[no-untyped-def]
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("GGML_ASSERT: out of memory")  # not an APIError: a local model's crash
        return f"You said {last_user_text(ctx)}"

    models = LocalModels(vad=SilentVAD(), stt=FakeSTT(), llm=FakeLLM(respond), tts=FakeTTS())  # type: ignore[arg-type]
    chosen = SessionModels(stt=models.stt, llm=models.llm, tts=models.tts, providers={"llm": "fake/fake-llm"})
    session = build_session(settings, models, chosen, Call(settings))
    failures = LocalFailures(settings.failure_apology, render_apology(models.tts, settings.failure_apology))
    failures.attach(session)
    await session.start(ParleyAgent(settings, greeting=""))
    try:
        with caplog.at_level(logging.INFO):
            session.generate_reply(user_input="What is the capital of France?")
            assert await wait_until(lambda: settings.failure_apology in said(session)), said(session)
            result = await session.run(user_input="Are you there?")
            result.expect.next_event().is_message(role="assistant")
        assert said(session) == [settings.failure_apology, "You said Are you there?"]
        assert (failures.failures, failures.apologies) == (1, 1)
        # Logged once: our record (with the traceback), not the framework's copy as well.
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert errors[0].name == "parley.faults" and "GGML_ASSERT" in errors[0].getMessage()
    finally:
        await session.aclose()


def test_apology_is_prerendered_only_from_a_blocking_synthesizer() -> None:
    assert render_apology(FakeTTS(), "Sorry.") is None  # no synthesize_pcm: said through the session's TTS

    class Blocking:
        sample_rate = 16000

        def synthesize_pcm(self, text: str) -> bytes:
            return b"\x01\x00" * 16000  # one second

    frames = render_apology(Blocking(), "Sorry.")
    assert frames is not None and len(frames) == 50
    assert sum(f.samples_per_channel for f in frames) == 16000


class _Session:
    """Just what ChatGuard calls on the framework's session: records the replies asked for."""

    def __init__(self) -> None:
        self.replies: list[str] = []

    async def interrupt(self) -> None:
        return None

    def generate_reply(self, *, user_input: str) -> None:
        self.replies.append(user_input)


def ev(text: str) -> TextInputEvent:
    return TextInputEvent(text=text, info=None, participant=None)  # type: ignore[arg-type]


def test_clean_drops_controls_keeps_text() -> None:
    assert clean("a\x00b\x1b[31mc\u202ed\n e\t") == "ab[31mcd\n e"
    assert clean("\x00\x07 \ufeff ") == ""


async def test_chat_guard_refuses_huge_empty_and_flood(caplog: pytest.LogCaptureFixture) -> None:
    guard = ChatGuard(max_chars=100, per_minute=60, burst=3)
    s = _Session()
    with caplog.at_level(logging.WARNING, logger="parley.chat"):
        await guard(s, ev("x" * 101))  # type: ignore[arg-type]
        await guard(s, ev("\x00\x01"))  # type: ignore[arg-type]
        for i in range(100):
            await guard(s, ev(f"hello {i}"))  # type: ignore[arg-type]
    assert s.replies == ["hello 0", "hello 1", "hello 2"]
    assert guard.dropped == {"too_long": 1, "empty": 1, "too_fast": 97}
    assert len([r for r in caplog.records if r.name == "parley.chat"]) == 1  # a summary, not 99 lines
    await asyncio.sleep(1.1)  # one message a second refills one token
    await guard(s, ev("later"))  # type: ignore[arg-type]
    assert s.replies[-1] == "later"
