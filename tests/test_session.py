"""Fast layer: the worker's session wiring with fake STT/LLM/TTS (no models, no processes).

Sessions are built by the worker's own `agent.session.build_session` and driven in text
mode (`session.run`), so what is checked is what the framework really sent and recorded.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit.agents import AgentSession, llm

from agent.assistant import ParleyAgent
from agent.callstate import Call
from agent.providers import LocalModels, SessionModels
from agent.report import TurnTracker, write_report
from agent.session import REALTIME_LOST, build_session, local_takeover
from agent.settings import Settings
from agent.telephony import PhoneCall, phone_settings
from tests.fakes.providers import FakeLLM, FakeSTT, FakeTTS, Reply, SilentVAD, last_user_text


def fake_models(respond, after_tool: str = "") -> LocalModels:
    return LocalModels(vad=SilentVAD(), stt=FakeSTT(), llm=FakeLLM(respond, after_tool), tts=FakeTTS())  # type: ignore[arg-type]


def chosen(models: LocalModels) -> SessionModels:
    return SessionModels(stt=models.stt, llm=models.llm, tts=models.tts,
                         providers={"llm": "fake/fake-llm"})


async def start(settings: Settings, models: LocalModels) -> tuple[AgentSession[Call], Call]:
    call = Call(settings, tracker=TurnTracker(room="fast", participant="tester"))
    session = build_session(settings, models, chosen(models), call)
    await session.start(ParleyAgent(settings, greeting=""))
    return session, call


def said(session: AgentSession) -> list[str]:
    return [i.text_content or "" for i in session.history.items if i.type == "message" and i.role == "assistant"]


async def test_each_turn_sends_the_whole_history_and_is_tracked():
    settings = Settings()
    models = fake_models(lambda ctx: f"You said {last_user_text(ctx)}")
    session, call = await start(settings, models)
    try:
        await session.run(user_input="My name is Zed.")
        second = await session.run(user_input="What is my name?")
        second.expect.next_event().is_message(role="assistant")
    finally:
        await session.aclose()
    fake: FakeLLM = models.llm  # type: ignore[assignment]
    last = fake.seen[-1]
    texts = [(i.role, i.text_content) for i in last.items if i.type == "message"]
    assert texts[0] == ("system", settings.instructions)
    assert ("user", "My name is Zed.") in texts and ("assistant", "You said My name is Zed.") in texts
    assert texts[-1] == ("user", "What is my name?")
    assert call.tracker is not None
    assert [(t.user_text, t.agent_text) for t in call.tracker.turns] == [
        ("My name is Zed.", "You said My name is Zed."), ("What is my name?", "You said What is my name?")]


async def test_local_llm_gets_no_tools():
    models = fake_models(lambda ctx: "ok")
    session, _ = await start(Settings(), models)
    try:
        await session.run(user_input="Hello")
    finally:
        await session.aclose()
    assert ParleyAgent(Settings()).tools == []


async def test_end_call_tool_ends_the_call_once_with_the_goodbye():
    settings = Settings(llm="openai", openai_api_key="sk-fast", goodbye="Bye from the fast test.")
    models = fake_models(lambda ctx: Reply(tool="end_call"))
    session, call = await start(settings, models)
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    result = await session.run(user_input="That is all, goodbye.")
    result.expect.next_event().is_function_call(name="end_call")
    await asyncio.wait_for(closed.wait(), 10)
    assert said(session)[-1] == "Bye from the fast test."
    assert call.ended_by == "agent (end_call)"
    await call.end("somebody else")  # a second ending changes nothing
    assert call.ended_by == "agent (end_call)"


async def test_end_without_goodbye_closes_the_session():
    models = fake_models(lambda ctx: "ok")
    session, call = await start(Settings(), models)
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    await call.end("keypad")
    await asyncio.wait_for(closed.wait(), 10)
    assert call.ended_by == "keypad" and said(session) == []


def test_realtime_takeover_apologises_only_when_the_caller_had_spoken():
    models = fake_models(lambda ctx: "ok")
    make = local_takeover(Settings(pipeline="realtime", openai_api_key="sk-x"), models)
    asked = llm.ChatContext()
    asked.add_message(role="user", content="Tell me about London.")
    assert make(asked)._greeting == REALTIME_LOST
    assert make(llm.ChatContext())._greeting == ""
    assert make(asked).llm is models.llm and make(asked).tools == []


@pytest.mark.parametrize(("direction", "greeting"), [("inbound", "sip_greeting"), ("outbound", "sip_outbound_greeting")])
def test_phone_greeting_follows_the_call_direction(direction, greeting):
    s = Settings()
    phone = PhoneCall(identity="sip_1", number="+15550199", trunk_number="+15550100", direction=direction, call_id="c1")
    assert phone_settings(s, phone).greeting == getattr(s, greeting)
    assert phone_settings(s, phone).instructions == s.instructions


def test_a_call_without_a_job_has_no_report():
    assert Call(Settings()).report() is None


def test_report_file_carries_the_turns(tmp_path):
    tracker = TurnTracker(room="r1", participant="p1")
    path = write_report(tmp_path, "r1", {"room": "r1"}, tracker.turns)
    body = json.loads(path.read_text())
    assert body["room"] == "r1" and body["turns"] == [] and path.name.startswith("r1-")
