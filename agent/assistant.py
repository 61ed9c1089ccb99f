"""The conversational agent: instructions and greeting.

Memory is the conversation itself: every model sees the whole call's history (the local
LLM keeps it in its KV cache, agent/providers/llama_llm.py), so a name said at turn 2 is
there at turn 10. Nothing here extracts facts or injects hints.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import NOT_GIVEN, Agent
from livekit.agents.utils import is_given

from .providers.piper_tts import PiperTTS
from .settings import Settings
from .tools import tools_for

TOOLS_NOTE = " Use your tools: lookup for questions about Parley, end_call when the caller says goodbye."


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
            tts = self.tts if is_given(self.tts) else self.session.tts
            audio = tts.remembered_frames(self._greeting) if isinstance(tts, PiperTTS) else None
            self.session.say(self._greeting, audio=audio or NOT_GIVEN, allow_interruptions=False)
