"""OpenAI Realtime API websocket (`/v1/realtime?model=…`), GA event names, as
livekit-plugins-openai 1.8.9 speaks it.

Client events handled: session.update, input_audio_buffer.append/commit/clear,
conversation.item.create/delete/truncate, response.create, response.cancel.
With server VAD configured (session.audio.input.turn_detection) an energy detector plays
the server's part: input_audio_buffer.speech_started / speech_stopped / committed, the
user item and its transcription (from `transcripts`), then a response: response.created,
output_item.added, content_part.added, output_audio_transcript.delta and
output_audio.delta (a 24 kHz tone, streamed faster than real time like the real API),
…done events and response.done with token usage. Speech during a response cancels it
(interrupt_response), as the real server does.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .base import Failure, ThreadedServer, rms, tone

RATE = 24000
SPEECH_RMS = 400.0
CHUNK_S = 0.1


def default_answer(transcript: str) -> str:
    if "capital" in transcript.lower():
        return "The capital of France is Paris."
    if "london" in transcript.lower():
        return ("For a rainy week in London pack an umbrella, a waterproof jacket, warm layers, "
                "comfortable shoes that can get wet, and a small bag for your wet things.")
    return f"You said: {transcript}"


class RealtimeFake(ThreadedServer):
    def __init__(self, transcripts: list[str] | None = None,
                 answer: Callable[[str], str] = default_answer) -> None:
        super().__init__()
        self.transcripts: deque[str] = deque(transcripts or [])
        self.default_transcript = "What is the capital of France?"
        self.answer = answer
        self.mode: Failure = "ok"
        self.down_after_close = False  # close_mid, then refuse every reconnection (HTTP 500)
        self.client_events: list[dict[str, Any]] = []  # everything but audio appends
        self.audio_bytes = 0
        self.session: dict[str, Any] = {}  # merged session.update payloads
        self.responses: list[dict[str, Any]] = []  # {"id", "text", "status", "audio_s_sent"}
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._realtime)
        return app

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.client_events if e.get("type") == type_]

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        if self.mode == "http500":
            self.failed()
            return web.json_response({"error": {"message": "fake outage"}}, status=500)
        if self.mode == "stall":
            self.failed()
            await asyncio.sleep(self.stall_s)
            return web.Response(status=504)
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        conn = _Connection(self, ws)
        try:
            await conn.run()
        finally:
            await conn.cancel_response()
        return ws


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


class _Connection:
    def __init__(self, fake: RealtimeFake, ws: web.WebSocketResponse) -> None:
        self.fake, self.ws = fake, ws
        self.items: list[str] = []  # conversation item ids, in order
        self.t = 0.0
        self.speaking = False
        self.silence = 0.0
        self.speech_start = 0.0
        self.user_item = ""
        self.buffer_s = 0.0
        self.response: asyncio.Task[None] | None = None
        self.response_id = ""
        self.last_user_text = ""

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.fake.new_id("event"))
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(event))

    def turn_detection(self) -> dict[str, Any] | None:
        return self.fake.session.get("audio", {}).get("input", {}).get("turn_detection")

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"type": "realtime", "id": self.fake.new_id("sess")}})
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            ev = json.loads(msg.data)
            kind = ev.get("type", "")
            if kind == "input_audio_buffer.append":
                await self.audio(base64.b64decode(ev["audio"]))
                continue
            self.fake.client_events.append(ev)
            if kind == "session.update":
                _deep_merge(self.fake.session, ev.get("session", {}))
                await self.send({"type": "session.updated", "session": self.fake.session})
            elif kind == "conversation.item.create":
                item = dict(ev["item"])
                if item.get("role") == "user":
                    self.last_user_text = " ".join(c.get("text") or "" for c in item.get("content", []))
                item.setdefault("id", self.fake.new_id("item"))
                prev = ev.get("previous_item_id") or (self.items[-1] if self.items else None)
                self.items.append(item["id"])
                await self.send({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
            elif kind == "conversation.item.delete":
                if ev["item_id"] in self.items:
                    self.items.remove(ev["item_id"])
                await self.send({"type": "conversation.item.deleted", "item_id": ev["item_id"]})
            elif kind == "conversation.item.truncate":
                await self.send({"type": "conversation.item.truncated", "item_id": ev["item_id"],
                                 "content_index": ev.get("content_index", 0),
                                 "audio_end_ms": ev.get("audio_end_ms", 0)})
            elif kind == "input_audio_buffer.clear":
                self.buffer_s = 0.0
                await self.send({"type": "input_audio_buffer.cleared"})
            elif kind == "input_audio_buffer.commit":
                if self.buffer_s < 0.1:
                    await self.send({"type": "error", "error": {
                        "type": "invalid_request_error", "code": "input_audio_buffer_commit_empty",
                        "message": "buffer too small", "event_id": ev.get("event_id")}})
                else:
                    await self.user_turn(create_response=False)
            elif kind == "response.create":
                await self.cancel_response()
                params = ev.get("response") or {}
                text = params.get("instructions") or (
                    self.fake.answer(self.last_user_text) if self.last_user_text else "How can I help you?")
                self.start_response(text, metadata=params.get("metadata"))
            elif kind == "response.cancel":
                await self.cancel_response()
            if self.ws.closed:
                return

    async def audio(self, pcm: bytes) -> None:
        self.fake.audio_bytes += len(pcm)
        dur = len(pcm) / 2 / RATE
        self.t += dur
        self.buffer_s += dur
        td = self.turn_detection()
        if not td:
            return
        loud = rms(pcm) > SPEECH_RMS
        if loud and not self.speaking:
            self.speaking, self.silence, self.speech_start = True, 0.0, self.t - dur
            self.user_item = self.fake.new_id("item")
            await self.send({"type": "input_audio_buffer.speech_started",
                             "audio_start_ms": int(self.speech_start * 1000), "item_id": self.user_item})
            if self.response and not self.response.done() and td.get("interrupt_response", True):
                await self.cancel_response()
        elif self.speaking:
            self.silence = 0.0 if loud else self.silence + dur
            if self.silence * 1000 >= td.get("silence_duration_ms", 500):
                self.speaking = False
                await self.send({"type": "input_audio_buffer.speech_stopped",
                                 "audio_end_ms": int(self.t * 1000), "item_id": self.user_item})
                await self.user_turn(create_response=td.get("create_response", True))

    async def user_turn(self, *, create_response: bool) -> None:
        item_id = self.user_item or self.fake.new_id("item")
        self.user_item = ""
        prev = self.items[-1] if self.items else None
        self.items.append(item_id)
        self.buffer_s = 0.0
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item_id})
        await self.send({"type": "conversation.item.added", "previous_item_id": prev, "item": {
            "id": item_id, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]}})
        transcript = self.fake.transcripts.popleft() if self.fake.transcripts else self.fake.default_transcript
        if self.fake.session.get("audio", {}).get("input", {}).get("transcription"):
            await self.send({"type": "conversation.item.input_audio_transcription.completed",
                             "item_id": item_id, "content_index": 0, "transcript": transcript,
                             "usage": {"type": "duration", "seconds": round(self.t - self.speech_start, 2)}})
        if create_response:
            await self.cancel_response()
            self.start_response(self.fake.answer(transcript))

    def start_response(self, text: str, metadata: dict[str, Any] | None = None) -> None:
        self.response_id = self.fake.new_id("resp")
        record = {"id": self.response_id, "text": text, "status": "in_progress", "audio_s_sent": 0.0}
        self.fake.responses.append(record)
        self.response = asyncio.create_task(self._respond(record, metadata))

    async def cancel_response(self) -> None:
        task, self.response = self.response, None
        if task and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _respond(self, record: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        rid, text = record["id"], record["text"]
        item_id = self.fake.new_id("item")
        base = {"id": rid, "object": "realtime.response", "metadata": metadata, "output_modalities": ["audio"]}
        await self.send({"type": "response.created", "response": {**base, "status": "in_progress", "output": []}})
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await self.send({"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item})
        prev = self.items[-1] if self.items else None
        self.items.append(item_id)
        await self.send({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        part = {"type": "audio", "transcript": ""}
        ids = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send({"type": "response.content_part.added", **ids, "part": part})
        words = re.findall(r"\S+\s*", text)
        pcm = tone(max(0.5, 0.07 * len(text)), RATE, freq=180.0)
        step = int(RATE * CHUNK_S) * 2
        chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)]
        status = "completed"
        try:
            for i, chunk in enumerate(chunks):
                if i < len(words):
                    await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": words[i]})
                await self.send({"type": "response.output_audio.delta", **ids,
                                 "delta": base64.b64encode(chunk).decode()})
                record["audio_s_sent"] = round(record["audio_s_sent"] + CHUNK_S, 2)
                if i == 0 and self.fake.mode == "close_mid":
                    self.fake.failed()
                    if self.fake.down_after_close:
                        self.fake.mode = "http500"
                    await self.ws.close(code=1011, message=b"fake outage")
                    return
                await asyncio.sleep(CHUNK_S / 2)  # faster than real time, as the API streams
            rest = "".join(words[len(chunks):])
            if rest:
                await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": rest})
        except asyncio.CancelledError:
            status = "cancelled"
        record["status"] = status
        content = [{"type": "output_audio", "transcript": text}]
        await self.send({"type": "response.output_audio.done", **ids})
        await self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": text})
        await self.send({"type": "response.content_part.done", **ids,
                         "part": {"type": "audio", "transcript": text}})
        done_item = {**item, "status": "completed" if status == "completed" else "incomplete", "content": content}
        await self.send({"type": "response.output_item.done", "response_id": rid, "output_index": 0,
                         "item": done_item})
        out_audio = int(record["audio_s_sent"] * 20)
        usage = {"total_tokens": 40 + len(words) + out_audio, "input_tokens": 40,
                 "output_tokens": len(words) + out_audio,
                 "input_token_details": {"text_tokens": 10, "audio_tokens": 30, "cached_tokens": 0},
                 "output_token_details": {"text_tokens": len(words), "audio_tokens": out_audio}}
        await self.send({"type": "response.done", "response": {**base, "status": status, "output": [done_item],
                                                                "usage": usage}})
