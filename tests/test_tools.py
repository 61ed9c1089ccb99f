"""Function tools in text mode: the real OpenAI plugin against a fake chat-completions
server that emits the tool calls; `session.run` + `RunResult.expect` check the turn."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit.agents import AgentSession

from agent.assistant import ParleyAgent
from agent.callstate import Call
from agent.providers.openai_llm import OpenAILLMOptions, openai_llm
from agent.settings import Settings
from agent.tools import Entry, KeywordSource, tools_for
from tests.fakes import OpenAIFake


@pytest.fixture(scope="module")
def fake():
    with OpenAIFake() as f:
        yield f


def cloud_settings(fake: OpenAIFake, **kw) -> Settings:
    return Settings(llm="openai", openai_api_key="sk-tools", openai_base_url=fake.base_url,
                    llm_model="gpt-tools", fallback=False, **kw)


async def start(settings: Settings, **agent_kw) -> AgentSession[Call]:
    # Text mode: the Call has no room or job; ending it closes the session.
    call = Call(settings)
    session = AgentSession[Call](userdata=call, llm=openai_llm(OpenAILLMOptions.from_settings(settings)))
    call.attach(session)
    await session.start(ParleyAgent(settings, greeting="", **agent_kw))
    return session


async def test_lookup_answers_from_the_knowledge_file(fake):
    session = await start(cloud_settings(fake))
    try:
        result = await session.run(user_input="What are your opening hours?")
        result.expect.next_event().is_function_call(name="lookup")
        out = result.expect.next_event().is_function_call_output()
        assert "Monday to Friday" in out.event().item.output
        msg = result.expect.next_event().is_message(role="assistant")
        assert "9 am to 6 pm" in msg.event().item.text_content
        result.expect.no_more_events()
    finally:
        await session.aclose()
    # what the fake was sent: our model, key, and both tools with their schemas
    req = fake.chat_requests()[0]
    assert req["model"] == "gpt-tools" and req["stream"] is True
    names = {t["function"]["name"]: t["function"] for t in req["tools"]}
    assert set(names) == {"end_call", "lookup"}
    assert "question" in names["lookup"]["parameters"]["properties"]
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-tools"
    # the tool result went back to the model as a tool message
    second = fake.chat_requests()[1]["messages"]
    assert second[-1]["role"] == "tool" and "Monday" in second[-1]["content"]


async def test_end_call_says_goodbye_and_closes_the_session(fake):
    settings = cloud_settings(fake, goodbye="Bye from the test.")
    session = await start(settings)
    closed = asyncio.Event()
    session.on("close", lambda _ev: closed.set())
    result = await session.run(user_input="Thanks, that is all. Goodbye!")
    result.expect.next_event().is_function_call(name="end_call")
    result.expect.next_event().is_function_call_output()
    await asyncio.wait_for(closed.wait(), 10)
    said = [i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"]
    assert said[-1] == "Bye from the test.", said


class SlowSource:
    """A knowledge source that takes its time, like a remote API."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def search(self, query: str, limit: int = 2) -> list[Entry]:
        await asyncio.sleep(self.delay)
        return [Entry("Opening hours", "We are open around the clock.")]


async def test_slow_tool_speaks_an_acknowledgement_first(fake):
    settings = cloud_settings(fake, tool_ack="Just a second, checking.", tool_ack_delay=0.3)
    session = await start(settings, tools=tools_for(settings, SlowSource(1.5)))
    try:
        t0 = time.monotonic()
        result = await session.run(user_input="When are you open?")
        assert time.monotonic() - t0 >= 1.5
        said = [i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"]
        assert "Just a second, checking." in said, said
        assert any("around the clock" in s for s in said), said
        result.expect.contains_function_call(name="lookup")
    finally:
        await session.aclose()


async def test_fast_tool_speaks_no_acknowledgement(fake):
    settings = cloud_settings(fake, tool_ack="Just a second, checking.", tool_ack_delay=0.5)
    session = await start(settings)
    try:
        await session.run(user_input="How much does it cost?")
        said = [i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"]
        assert "Just a second, checking." not in said
        assert any("49 euros" in s for s in said), said
    finally:
        await session.aclose()


def test_the_local_llm_is_offered_no_tools():
    assert tools_for(Settings()) == []
    assert ParleyAgent(Settings()).tools == []
    assert {t.id for t in ParleyAgent(Settings(llm="openai")).tools} == {"end_call", "lookup"}
    assert {t.id for t in ParleyAgent(Settings(pipeline="realtime")).tools} == {"end_call", "lookup"}
    assert tools_for(Settings(llm="openai", tools=False)) == []


async def test_keyword_source_ranks_the_right_entry():
    src = KeywordSource.from_markdown(Settings().knowledge_file)
    for question, title in [("when are you open on saturday", "Opening hours"),
                            ("how much is the team plan", "Pricing and plans"),
                            ("can I get my money back", "Refunds, money back and cancellation"),
                            ("what is your support email", "Contact and support email")]:
        hits = await src.search(question)
        assert hits and hits[0].title == title, (question, hits)
    assert await src.search("zebra quantum banana") == []
