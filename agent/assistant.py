"""The conversational agent: instructions, greeting and (later) tools."""

from __future__ import annotations

from livekit.agents import Agent

from .settings import Settings


class ParleyAgent(Agent):
    def __init__(self, settings: Settings, *, greeting: str | None = None) -> None:
        super().__init__(instructions=settings.instructions)
        self._greeting = greeting if greeting is not None else settings.greeting

    async def on_enter(self) -> None:
        # A fixed greeting is spoken immediately (no LLM round-trip) and cannot be
        # talked over, so the caller always hears who answered.
        if self._greeting:
            self.session.say(self._greeting, allow_interruptions=False)
