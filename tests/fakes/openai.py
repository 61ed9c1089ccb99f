"""OpenAI-compatible HTTP API: `/v1/chat/completions` (SSE streaming, tool calls, usage)
and `/v1/audio/speech` (SSE `speech.audio.delta` events, or raw PCM for tts-1)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .base import Failure, ThreadedServer, tone

TTS_RATE = 24000


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (name, arguments)


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [])
    return ""


def default_reply(body: dict[str, Any]) -> Reply:
    """A scripted assistant: answers the fixture questions, calls tools when offered."""
    # the newest user or tool message decides (spoken acknowledgements may follow a tool result)
    latest = next((m for m in reversed(body.get("messages", [])) if m.get("role") in ("user", "tool")), {})
    tools = {t["function"]["name"] for t in body.get("tools", []) if t.get("type") == "function"}
    if latest.get("role") == "tool":
        return Reply(f"Here is what I found. {latest.get('content', '')}")
    text = last_user_text(body).lower()
    if "end_call" in tools and re.search(r"\b(bye|goodbye|hang up)\b", text):
        return Reply(tool_calls=[("end_call", {})])
    if "lookup" in tools and re.search(r"\b(open|hours|price|cost|refund|office|email)\b", text):
        return Reply(tool_calls=[("lookup", {"question": text})])
    if "capital" in text:
        return Reply("The capital of France is Paris.")
    return Reply(f"You said: {text}" if text else "Hello from the fake cloud.")


class OpenAIFake(ThreadedServer):
    def __init__(self, reply: Callable[[dict[str, Any]], Reply] = default_reply) -> None:
        super().__init__()
        self.reply = reply
        self.llm_mode: Failure = "ok"
        self.tts_mode: Failure = "ok"
        self.chunk_delay = 0.02  # between streamed pieces, like a real endpoint
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/audio/speech", self._speech)
        return app

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    def speech_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/audio/speech")]

    async def _fail_before(self, mode: Failure) -> web.StreamResponse | None:
        if mode == "http500":
            self.failed()
            return web.json_response({"error": {"message": "fake outage", "type": "server_error"}}, status=500)
        if mode == "stall":
            self.failed()
            await asyncio.sleep(self.stall_s)
            return web.json_response({"error": {"message": "stalled"}}, status=504)
        return None

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                            "x-request-id": f"req_{next(self._ids)}"})
        await resp.prepare(request)
        return resp

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.record(request, body)
        mode = self.llm_mode
        if failed := await self._fail_before(mode):
            return failed
        reply = self.reply(body)
        cid, model, created = f"chatcmpl-{next(self._ids)}", body.get("model", ""), int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        resp = await self._sse(request)
        await resp.write(chunk({"role": "assistant", "content": ""}))
        pieces = re.findall(r"\S+\s*", reply.text)
        for i, piece in enumerate(pieces):
            await asyncio.sleep(self.chunk_delay)
            await resp.write(chunk({"content": piece}))
            if i == 0 and mode in ("close_mid", "stall_mid"):
                self.failed()
                if mode == "stall_mid":
                    await asyncio.sleep(self.stall_s)
                assert request.transport is not None
                request.transport.abort()  # the stream ends mid-reply, no [DONE]
                return resp
        for n, (name, args) in enumerate(reply.tool_calls):
            call = {"index": n, "id": f"call_{next(self._ids)}", "type": "function",
                    "function": {"name": name, "arguments": ""}}
            await resp.write(chunk({"tool_calls": [call]}))
            await resp.write(chunk({"tool_calls": [{"index": n, "function": {"arguments": json.dumps(args)}}]}))
        await resp.write(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces) + 1,
                 "total_tokens": prompt + len(pieces) + 1}
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [], "usage": usage}
        await resp.write(f"data: {json.dumps(data)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.record(request, body)
        mode = self.tts_mode
        if failed := await self._fail_before(mode):
            return failed
        text = body.get("input", "")
        pcm = tone(max(0.4, 0.06 * len(text)), TTS_RATE)
        step = TTS_RATE * 2 // 10  # 100 ms of 16-bit audio
        chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        sse = body.get("stream_format") == "sse"
        if sse:
            resp = await self._sse(request)
        else:
            resp = web.StreamResponse(headers={"Content-Type": "audio/pcm", "x-request-id": f"req_{next(self._ids)}"})
            await resp.prepare(request)
        for i, c in enumerate(chunks):
            await asyncio.sleep(self.chunk_delay)
            if sse:
                event = {"type": "speech.audio.delta", "audio": base64.b64encode(c).decode()}
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
            else:
                await resp.write(c)
            if i == 0 and mode in ("close_mid", "stall_mid"):
                self.failed()
                if mode == "stall_mid":
                    await asyncio.sleep(self.stall_s)
                assert request.transport is not None
                request.transport.abort()
                return resp
        if sse:
            done = {"type": "speech.audio.done",
                    "usage": {"input_tokens": len(text.split()), "output_tokens": len(chunks) * 10,
                              "total_tokens": len(text.split()) + len(chunks) * 10}}
            await resp.write(f"data: {json.dumps(done)}\n\n".encode())
        await resp.write_eof()
        return resp
