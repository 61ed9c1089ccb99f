"""Deepgram live transcription: the `/v1/listen` websocket.

Audio arrives as binary linear16 frames; an energy detector stands in for Deepgram's
models: `SpeechStarted` when speech begins, interim `Results` while it goes on, a final
`Results` (`is_final`, `speech_final`) after `ENDPOINT_SILENCE_S` of silence, then
`UtteranceEnd` when the client asked for it. The words come from `transcripts` (the test
knows what its audio says); the fake checks the audio is there, not what it says.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from .base import Failure, ThreadedServer, rms

SPEECH_RMS = 400.0
ENDPOINT_SILENCE_S = 0.5
INTERIM_EVERY_S = 0.5
SILENT_RESULTS_EVERY_S = 1.0  # Deepgram keeps answering during silence with empty Results


class DeepgramFake(ThreadedServer):
    def __init__(self, transcripts: list[str] | None = None) -> None:
        super().__init__()
        self.transcripts: deque[str] = deque(transcripts or [])
        self.default_transcript = "What is the capital of France?"
        self.mode: Failure = "ok"
        self.audio_bytes = 0  # linear16 audio received, all connections
        self.finals: list[str] = []  # final transcripts sent
        self.control_messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/listen", self._listen)
        return app

    @property
    def listen_requests(self) -> list[dict[str, str]]:
        return [{**r.query, "authorization": r.headers.get("Authorization", "")} for r in self.requests]

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        self.record(request)
        if self.mode == "http500":
            self.failed()
            return web.json_response({"err_code": "INTERNAL", "err_msg": "fake outage"}, status=500)
        if self.mode == "stall":
            self.failed()
            await asyncio.sleep(self.stall_s)
            return web.Response(status=504)
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        await _Stream(self, ws, request.query).run()
        return ws


class _Stream:
    def __init__(self, fake: DeepgramFake, ws: web.WebSocketResponse, query: Any) -> None:
        self.fake, self.ws = fake, ws
        self.rate = int(query.get("sample_rate", "16000"))
        self.utterance_end = "utterance_end_ms" in query
        self.vad_events = query.get("vad_events", "true") == "true"
        self.request_id = str(uuid.uuid4())
        self.t = 0.0  # stream time, seconds of audio received
        self.speaking = False
        self.speech_start = 0.0
        self.silence = 0.0
        self.last_interim = 0.0
        self.last_silent_result = 0.0
        self.transcript = ""

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(msg))

    def results(self, text: str, *, final: bool, speech_final: bool, start: float, end: float) -> dict[str, Any]:
        words = text.split()
        step = (end - start) / max(len(words), 1)
        return {
            "type": "Results", "channel_index": [0, 1], "duration": round(end - start, 3),
            "start": round(start, 3), "is_final": final, "speech_final": speech_final,
            "from_finalize": False,
            "channel": {"alternatives": [{
                "transcript": text, "confidence": 0.97 if text else 0.0,
                "words": [{"word": w.strip(".,?!").lower(), "punctuated_word": w, "confidence": 0.97,
                           "start": round(start + i * step, 3), "end": round(start + (i + 1) * step, 3)}
                          for i, w in enumerate(words)],
            }]},
            "metadata": {"request_id": self.request_id, "model_uuid": "fake", "model_info": {"name": "fake"}},
        }

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                if self.fake.mode == "stall_mid":
                    if not self.fake.failures_at:
                        self.fake.failed()
                    continue  # swallow audio, answer nothing
                await self.audio(msg.data)
                if self.ws.closed:
                    return
            elif msg.type == WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.fake.control_messages.append(data)
                if data.get("type") == "Finalize" and self.speaking:
                    await self.end_of_speech()
                elif data.get("type") == "CloseStream":
                    await self.send({"type": "Metadata", "request_id": self.request_id,
                                     "duration": round(self.t, 3), "channels": 1})
                    await self.ws.close()
                    return

    async def audio(self, pcm: bytes) -> None:
        self.fake.audio_bytes += len(pcm)
        dur = len(pcm) / 2 / self.rate
        loud = rms(pcm) > SPEECH_RMS
        self.t += dur
        if loud and not self.speaking:
            self.speaking, self.speech_start, self.silence = True, self.t - dur, 0.0
            self.last_interim = self.t
            self.transcript = (self.fake.transcripts.popleft() if self.fake.transcripts
                               else self.fake.default_transcript)
            if self.vad_events:
                await self.send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": round(self.speech_start, 3)})
        if self.speaking:
            self.silence = 0.0 if loud else self.silence + dur
            if self.fake.mode == "close_mid" and self.t - self.speech_start > 0.3:
                self.fake.failed()
                await self.ws.close(code=1011, message=b"fake outage")
                return
            if self.silence >= ENDPOINT_SILENCE_S:
                await self.end_of_speech()
            elif self.t - self.last_interim >= INTERIM_EVERY_S:
                self.last_interim = self.t
                words = self.transcript.split()
                n = max(1, min(len(words) - 1, int((self.t - self.speech_start) / 0.4)))
                await self.send(self.results(" ".join(words[:n]), final=False, speech_final=False,
                                             start=self.speech_start, end=self.t))
        elif self.t - self.last_silent_result >= SILENT_RESULTS_EVERY_S:
            self.last_silent_result = self.t
            await self.send(self.results("", final=True, speech_final=False, start=self.t - dur, end=self.t))

    async def end_of_speech(self) -> None:
        self.speaking = False
        self.fake.finals.append(self.transcript)
        await self.send(self.results(self.transcript, final=True, speech_final=True,
                                     start=self.speech_start, end=self.t - self.silence))
        if self.utterance_end:
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.t, 3)})
        self.last_silent_result = self.t
