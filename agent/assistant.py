"""The conversational agent: instructions, greeting and caller memory."""

from __future__ import annotations

import re

from livekit.agents import Agent, llm

from .settings import Settings

# "my name is Alice", "I'm Bob", "call me Carol": the one fact callers most expect to be kept.
_NAME = re.compile(r"\b(?:my name is|my name's|call me|i am|i'm)\s+([A-Z][a-z]+)\b", re.IGNORECASE)
_NOT_NAMES = {"sorry", "fine", "good", "okay", "ok", "here", "not", "just", "planning", "looking", "going",
              "trying", "calling", "back", "so", "very", "really", "glad", "happy", "a", "the"}


class ParleyAgent(Agent):
    def __init__(self, settings: Settings, *, greeting: str | None = None) -> None:
        super().__init__(instructions=settings.instructions)
        self._greeting = greeting if greeting is not None else settings.greeting
        self._caller_name: str | None = None

    async def on_enter(self) -> None:
        # A fixed greeting is spoken immediately (no LLM round-trip) and cannot be
        # talked over, so the caller always hears who answered.
        if self._greeting:
            self.session.say(self._greeting, allow_interruptions=False)

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        # Small local models lose facts from a few turns back; restating the caller's
        # name as a system note for every turn keeps it reliably (bigger LLMs don't mind).
        if m := _NAME.search(new_message.text_content or ""):
            if m.group(1).lower() not in _NOT_NAMES:
                self._caller_name = m.group(1).capitalize()
        if self._caller_name:
            turn_ctx.add_message(role="system", content=f"The user's name is {self._caller_name}.")
