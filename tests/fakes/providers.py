"""In-process fake STT, LLM and TTS for the fast test layer (no models, no processes).

Real `stt.STT` / `llm.LLM` / `tts.TTS` subclasses, so the framework drives them exactly as
it drives Whisper, llama.cpp and Piper: sessions, tools, interruptions and metrics are the
framework's own code. Each fake records what it was asked, so a test asserts on what the
pipeline actually sent (the history the LLM saw, the text spoken).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import llm, stt, tts, utils, vad
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr


@dataclass
class Reply:
    text: str = ""
    tool: str = ""  # name of a function tool to call instead of (or before) the text
    tool_args: dict[str, Any] = field(default_factory=dict)
    ttft_s: float = 0.0


def last_user_text(chat_ctx: llm.ChatContext) -> str:
    users = [i for i in chat_ctx.items if i.type == "message" and i.role == "user"]
    return (users[-1].text_content or "") if users else ""


class FakeLLM(llm.LLM):
    """Answers each turn with `respond(chat_ctx)`; after a tool's output, with `after_tool`."""

    def __init__(self, respond: Callable[[llm.ChatContext], Reply | str], after_tool: str = "") -> None:
        super().__init__()
        self.respond = respond
        self.after_tool = after_tool
        self.seen: list[llm.ChatContext] = []  # every chat context the session sent

    @property
    def model(self) -> str:
        return "fake-llm"

    @property
    def provider(self) -> str:
        return "fake"

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
             parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
             tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
             extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN) -> llm.LLMStream:
        self.seen.append(chat_ctx.copy())
        return _FakeLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _FakeLLMStream(llm.LLMStream):
    def __init__(self, fake: FakeLLM, **kwargs: Any) -> None:
        super().__init__(fake, **kwargs)
        self._fake = fake

    async def _run(self) -> None:
        items = self.chat_ctx.items
        if items and items[-1].type == "function_call_output":
            reply = Reply(self._fake.after_tool)
        else:
            r = self._fake.respond(self.chat_ctx)
            reply = Reply(r) if isinstance(r, str) else r
        await asyncio.sleep(reply.ttft_s)
        rid = utils.shortuuid("fake_")
        words = reply.text.split(" ") if reply.text else []
        for n, word in enumerate(words):  # streamed word by word, like a real model
            piece = word if n == 0 else " " + word
            self._event_ch.send_nowait(llm.ChatChunk(id=rid, delta=llm.ChoiceDelta(role="assistant", content=piece)))
        if reply.tool:
            call = llm.FunctionToolCall(name=reply.tool, arguments=json.dumps(reply.tool_args),
                                        call_id=utils.shortuuid("call_"))
            self._event_ch.send_nowait(llm.ChatChunk(id=rid, delta=llm.ChoiceDelta(role="assistant", tool_calls=[call])))


class FakeTTS(tts.TTS):
    """Speaks a 440 Hz tone, 60 ms per character (non-silent audio of a plausible length)."""

    SAMPLE_RATE = 16000

    def __init__(self) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=self.SAMPLE_RATE,
                         num_channels=1)
        self.spoken: list[str] = []

    @property
    def model(self) -> str:
        return "fake-tts"

    @property
    def provider(self) -> str:
        return "fake"

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> tts.ChunkedStream:
        self.spoken.append(text)
        return _FakeChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class _FakeChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id=utils.shortuuid("faketts_"), sample_rate=FakeTTS.SAMPLE_RATE,
                                  num_channels=1, mime_type="audio/pcm")
        n = int(FakeTTS.SAMPLE_RATE * 0.06 * max(1, len(self._input_text)))
        tone = (np.sin(2 * np.pi * 440 * np.arange(n) / FakeTTS.SAMPLE_RATE) * 8000).astype(np.int16)
        output_emitter.push(tone.tobytes())
        output_emitter.flush()


class FakeSTT(stt.STT):
    """Transcribes each segment as the next text of `transcripts` (empty when they run out)."""

    def __init__(self, transcripts: list[str] | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.transcripts = list(transcripts or [])

    @property
    def model(self) -> str:
        return "fake-stt"

    @property
    def provider(self) -> str:
        return "fake"

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> stt.SpeechEvent:
        text = self.transcripts.pop(0) if self.transcripts else ""
        return stt.SpeechEvent(type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                               alternatives=[stt.SpeechData(language="en", text=text)])


def tone_frames(seconds: float, rate: int = 16000) -> list[rtc.AudioFrame]:
    """20 ms frames of a tone, for feeding a STT or VAD in tests."""
    n = int(rate * seconds)
    pcm = (np.sin(2 * np.pi * 300 * np.arange(n) / rate) * 6000).astype(np.int16)
    step = rate // 50
    return [rtc.AudioFrame(pcm[i:i + step].tobytes(), rate, 1, len(pcm[i:i + step])) for i in range(0, n - step + 1, step)]


class SilentVAD(vad.VAD):
    """A VAD that hears nobody: text-mode sessions need one to run a non-streaming STT."""

    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))

    @property
    def model(self) -> str:
        return "silent-vad"

    @property
    def provider(self) -> str:
        return "fake"

    def stream(self) -> vad.VADStream:
        return _SilentVADStream(self)


class _SilentVADStream(vad.VADStream):
    async def _main_task(self) -> None:
        async for _ in self._input_ch:
            pass
