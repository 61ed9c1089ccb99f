"""The conversational agent: instructions, greeting and caller memory."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable
from typing import Any

from livekit.agents import Agent, ModelSettings, llm

from .settings import Settings
from .tools import tools_for

TOOLS_NOTE = " Use your tools: lookup for questions about Parley, end_call when the caller says goodbye."

# "my name is Alice", "I'm Bob", "call me Carol": the one fact callers most expect to be kept.
_NAME = re.compile(r"\b(?:my name is|my name's|call me|i am|i'm)\s+([A-Z][a-z]+)\b", re.IGNORECASE)
_NOT_NAMES = {"sorry", "fine", "good", "okay", "ok", "here", "not", "just", "planning", "looking", "going",
              "trying", "calling", "back", "so", "very", "really", "glad", "happy", "a", "the", "in", "at"}


def caller_name(chat_ctx: llm.ChatContext) -> tuple[str | None, bool]:
    """(latest name the caller gave, whether they gave it in their latest message)."""
    name, latest = None, False
    users = [i for i in chat_ctx.items if i.type == "message" and i.role == "user"]
    for idx, item in enumerate(users):
        for m in _NAME.finditer(item.text_content or ""):
            if m.group(1).lower() not in _NOT_NAMES:
                name, latest = m.group(1).capitalize(), idx == len(users) - 1
    return name, latest


def with_memory_note(chat_ctx: llm.ChatContext) -> llm.ChatContext:
    """A copy of the context with the caller's name restated just before their last turn.

    Small local models lose a fact said a few turns back and copy their own previous
    reply; a short system note next to the question keeps the name. Done at LLM time,
    not in the history, so preemptive generation and the session report are unaffected.
    """
    name, latest = caller_name(chat_ctx)
    if name is None:
        return chat_ctx
    note = (f"The user's name is {name}. Say nice to meet you, {name}." if latest
            else f"Note: the user said their name is {name}.")
    ctx = chat_ctx.copy()
    last_user = max((i for i, it in enumerate(ctx.items) if it.type == "message" and it.role == "user"),
                    default=len(ctx.items))
    ctx.items.insert(last_user, llm.ChatMessage(role="system", content=[note]))
    return ctx


class ParleyAgent(Agent):
    def __init__(self, settings: Settings, *, greeting: str | None = None, **agent_options: Any) -> None:
        # Tools only for a model that can call them; agent_options can also give this agent
        # its own stt/llm/tts (the realtime pipeline's local fallback does).
        tools = agent_options.pop("tools", None)
        tools = tools_for(settings) if tools is None else tools
        instructions = settings.instructions + (TOOLS_NOTE if tools else "")
        super().__init__(instructions=instructions, tools=tools, **agent_options)
        self._greeting = greeting if greeting is not None else settings.greeting

    async def on_enter(self) -> None:
        # A fixed greeting is spoken immediately (no LLM round-trip) and cannot be
        # talked over, so the caller always hears who answered.
        if self._greeting:
            self.session.say(self._greeting, allow_interruptions=False)

    def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[llm.ChatChunk | str] | Any:
        return Agent.default.llm_node(self, with_memory_note(chat_ctx), tools, model_settings)
