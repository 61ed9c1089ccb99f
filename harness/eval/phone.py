"""`--transport sip`: the scenario as a phone call into LiveKit SIP, over G.711 µ-law RTP.

A small SIP user agent (UDP, no registration, the way a trunk or PBX sends an inbound call)
dials the inbound number on livekit-sip, answers nothing but BYE/OPTIONS, and streams the
caller's audio as 20 ms PCMU packets in real time, turn by turn; what livekit-sip sends back
is the agent as the phone hears it (latency is measured on those packets). sipp cannot do
this: it plays one pcap per call and cannot wait for the agent between turns.

Transcripts and the agent's state come from the room the dispatch rule created: found by
the caller number (`sip.phoneNumber`), joined as a hidden participant that only listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator

import numpy as np
from livekit import api, rtc

from agent.audio import resample

from ..audio import Clip, rms
from ..call import AGENT_SPEECH_RMS, CallError, CallState, _http_url, attach_observers
from .runner import CallResult, Connected, RunOptions

PT_PCMU = 0
PT_EVENT = 101
RATE = 8000
PTIME = 0.02
SAMPLES = int(RATE * PTIME)
ULAW_SILENCE = 0xFF


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 µ-law (the standard segment encoder, with the 0x84 bias)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0).astype(np.int32)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign = u & 0x80
    exponent = ((u >> 4) & 0x07).astype(np.int32)
    mantissa = (u & 0x0F).astype(np.int32)
    value = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -value, value).astype(np.int16)


class _Rtp(asyncio.DatagramProtocol):
    """Sends the caller's stream (silence between clips) and records the agent's voice."""

    def __init__(self, state: CallState) -> None:
        self.state = state
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.queue: asyncio.Queue[tuple[bytes, asyncio.Future[float], asyncio.Future[float]]] = asyncio.Queue()
        self.ssrc = secrets.randbits(32)
        self.packets_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2 or data[1] & 0x7F != PT_PCMU:
            return
        self.packets_in += 1
        now = time.perf_counter()
        cc = data[0] & 0x0F
        level = rms(ulaw_decode(data[12 + 4 * cc:]))
        self.state.last_frame_at = now
        if level > AGENT_SPEECH_RMS:
            self.state.agent_speech.append((now, level))
            self.state.poke()

    async def pump(self) -> None:
        seq, ts = secrets.randbits(16), secrets.randbits(32)
        silence = bytes([ULAW_SILENCE]) * SAMPLES
        next_t = time.perf_counter()
        current: tuple[bytes, asyncio.Future[float], asyncio.Future[float]] | None = None
        pos = 0
        while True:
            if current is None and not self.queue.empty():
                current, pos = self.queue.get_nowait(), 0
            if current is not None:
                payload = current[0][pos: pos + SAMPLES].ljust(SAMPLES, bytes([ULAW_SILENCE]))
            else:
                payload = silence
            delay = next_t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.transport is not None and self.remote is not None:
                header = struct.pack("!BBHII", 0x80, PT_PCMU, seq & 0xFFFF, ts & 0xFFFFFFFF, self.ssrc)
                self.transport.sendto(header + payload, self.remote)
            if current is not None:
                data, started, done = current
                if pos == 0 and not started.done():
                    started.set_result(next_t)
                pos += SAMPLES
                if pos >= len(data):
                    if not done.done():
                        done.set_result(next_t + PTIME)
                    current = None
            seq, ts, next_t = seq + 1, ts + SAMPLES, next_t + PTIME


class RtpLine:
    def __init__(self, rtp: _Rtp) -> None:
        self.rtp = rtp

    def play(self, clip: Clip) -> tuple[asyncio.Future[float], asyncio.Future[float]]:
        loop = asyncio.get_running_loop()
        started, done = loop.create_future(), loop.create_future()
        pcm = clip.pcm if clip.sample_rate == RATE else resample(clip.pcm, clip.sample_rate, RATE)
        self.rtp.queue.put_nowait((ulaw_encode(pcm), started, done))
        return started, done


class _Sip(asyncio.DatagramProtocol):
    """The signalling socket: responses go to a queue; requests from livekit-sip are answered."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: asyncio.Queue[tuple[int, str, dict[str, list[str]], str]] = asyncio.Queue()
        self.hung_up = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            first, headers, body = parse_sip(data.decode("utf-8", errors="replace"))
        except ValueError:
            return
        if first.startswith("SIP/2.0"):
            m = re.match(r"SIP/2\.0 (\d{3})", first)
            if m:
                self.responses.put_nowait((int(m.group(1)), first, headers, body))
            return
        method = first.split(" ", 1)[0]
        if method == "ACK":
            return
        if method == "BYE":
            self.hung_up.set()
        reply = ["SIP/2.0 200 OK"] + [f"{h}: {v}" for h in ("Via", "From", "To", "Call-ID", "CSeq")
                                      for v in headers.get(h.lower(), [])] + ["Content-Length: 0", "", ""]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(reply).encode(), addr)


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type"}


def parse_sip(text: str) -> tuple[str, dict[str, list[str]], str]:
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not lines or not lines[0]:
        raise ValueError("empty message")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return lines[0], headers, body


def _sdp_media(body: str) -> tuple[str, int, list[int]]:
    conn = re.search(r"^c=IN IP4 (\S+)", body, re.M)
    media = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+)", body, re.M)
    if not conn or not media:
        raise CallError(f"LiveKit SIP answered without a usable audio description: {body[:120]!r}")
    return conn.group(1), int(media.group(1)), [int(x) for x in media.group(2).split()]


def _even_udp_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 == 0:
            return port
    return port


class SipDialog:
    def __init__(self, sip: _Sip, target: tuple[str, int], local_port: int, number: str, caller: str,
                 rtp_port: int) -> None:
        self.sip, self.target, self.local_port = sip, target, local_port
        self.number, self.caller, self.rtp_port = number, caller, rtp_port
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.tag = secrets.token_hex(4)
        self.remote_to = ""
        self.remote_uri = ""
        self.cseq = 1

    def _base(self, method: str, uri: str, branch: str, cseq: int, to: str) -> list[str]:
        return [f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={branch};rport",
                "Max-Forwards: 70",
                f'From: "parley-eval" <sip:{self.caller}@127.0.0.1:{self.local_port}>;tag={self.tag}',
                f"To: {to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                f"Contact: <sip:{self.caller}@127.0.0.1:{self.local_port}>", "User-Agent: parley-eval"]

    def _send(self, lines: list[str], body: str = "") -> None:
        msg = "\r\n".join([*lines, *(["Content-Type: application/sdp"] if body else []),
                           f"Content-Length: {len(body.encode())}", "", body])
        assert self.sip.transport is not None
        self.sip.transport.sendto(msg.encode(), self.target)

    async def invite(self, limit: float) -> tuple[str, int]:
        """Dial; returns the RTP address LiveKit SIP answered with."""
        host, port = self.target
        uri = f"sip:{self.number}@{host}:{port}"
        sdp = "\r\n".join(["v=0", f"o=parley-eval {secrets.randbits(31)} 1 IN IP4 127.0.0.1", "s=parley-eval",
                           "c=IN IP4 127.0.0.1", "t=0 0", f"m=audio {self.rtp_port} RTP/AVP {PT_PCMU} {PT_EVENT}",
                           "a=rtpmap:0 PCMU/8000", f"a=rtpmap:{PT_EVENT} telephone-event/8000",
                           f"a=fmtp:{PT_EVENT} 0-15", "a=ptime:20", "a=sendrecv", ""])
        branch = "z9hG4bK" + secrets.token_hex(6)
        invite = self._base("INVITE", uri, branch, 1, f"<{uri}>")
        deadline = time.monotonic() + limit
        provisional = False
        resend = 0.5
        self._send(invite, sdp)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CallError(f"LiveKit SIP at {host}:{port} did not answer the call within {limit:.0f}s")
            try:
                status, first, headers, body = await asyncio.wait_for(
                    self.sip.responses.get(), timeout=min(remaining, resend))
            except TimeoutError:
                if not provisional:  # UDP: retransmit until the server says anything
                    self._send(invite, sdp)
                    resend = min(resend * 2, 4.0)
                continue
            if headers.get("call-id", [""])[0] != self.call_id:
                continue
            if status < 200:
                provisional = True
                continue
            to = headers.get("to", [""])[0]
            if status >= 300:
                ack = self._base("ACK", uri, branch, 1, to)
                self._send(ack)
                raise CallError(f"LiveKit SIP refused the call to {self.number}: {first[8:]}")
            self.remote_to = to
            contact = re.search(r"<([^>]+)>", headers.get("contact", [f"<{uri}>"])[0])
            self.remote_uri = contact.group(1) if contact else uri
            self._send(self._base("ACK", self.remote_uri, "z9hG4bK" + secrets.token_hex(6), 1, self.remote_to))
            media_host, media_port, pts = _sdp_media(body)
            if PT_PCMU not in pts:
                raise CallError(f"LiveKit SIP answered without G.711 µ-law (payload types {pts})")
            return media_host, media_port

    async def bye(self) -> None:
        if not self.remote_to:
            return
        self.cseq += 1
        bye = self._base("BYE", self.remote_uri, "z9hG4bK" + secrets.token_hex(6), self.cseq, self.remote_to)
        for wait in (0.5, 1.0, 2.0):
            self._send(bye)
            try:
                while True:
                    status, _, headers, _ = await asyncio.wait_for(self.sip.responses.get(), timeout=wait)
                    if headers.get("call-id", [""])[0] == self.call_id and "BYE" in headers.get("cseq", [""])[0] \
                            and status >= 200:
                        return
            except TimeoutError:
                continue


async def _find_room(lk: api.LiveKitAPI, caller: str, limit: float) -> tuple[str, str]:
    """(room, SIP participant identity) of the call from `caller`, once LiveKit SIP has joined."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
        for room in rooms:
            people = (await lk.room.list_participants(api.ListParticipantsRequest(room=room.name))).participants
            for p in people:
                if p.kind == api.ParticipantInfo.Kind.SIP and p.attributes.get("sip.phoneNumber") == caller:
                    return room.name, p.identity
        await asyncio.sleep(0.3)
    raise CallError(f"no LiveKit room holds the phone call from {caller} after {limit:.0f}s "
                    "(is `parley-sip setup` done and the dispatch rule in place?)")


@contextlib.asynccontextmanager
async def connect_sip(opts: RunOptions, result: CallResult) -> AsyncIterator[Connected]:
    host, _, port_s = opts.sip_address.rpartition(":")
    if not host or not port_s.isdigit():
        raise CallError(f"SIP address {opts.sip_address!r} is not host:port")
    loop = asyncio.get_running_loop()
    caller = "+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7))
    state = CallState(me="")
    rtp_port = _even_udp_port()
    rtp_t, rtp = await loop.create_datagram_endpoint(lambda: _Rtp(state), local_addr=("127.0.0.1", rtp_port))
    sip_t, sip = await loop.create_datagram_endpoint(_Sip, local_addr=("127.0.0.1", 0))
    local_port = sip_t.get_extra_info("sockname")[1]
    dialog = SipDialog(sip, (host, int(port_s)), local_port, opts.sip_number, caller, rtp_port)
    lk = api.LiveKitAPI(_http_url(opts.url), opts.api_key, opts.api_secret)
    room = rtc.Room()
    pump: asyncio.Task[None] | None = None
    try:
        media = await dialog.invite(opts.timeout)
        answered = time.perf_counter()
        rtp.remote = media
        pump = asyncio.create_task(rtp.pump())
        try:
            name, identity = await _find_room(lk, caller, opts.timeout)
        except api.TwirpError as e:
            raise CallError(f"LiveKit API error {e.status}: {e.message}") from None
        state.me = identity
        result.room = name
        attach_observers(room, state, agent_audio=False)
        token = (api.AccessToken(opts.api_key, opts.api_secret).with_identity(f"eval-observer-{secrets.token_hex(3)}")
                 .with_grants(api.VideoGrants(room_join=True, room=name, hidden=True, can_publish=False,
                                              can_publish_data=False)).to_jwt())
        try:
            await asyncio.wait_for(room.connect(opts.url, token), timeout=opts.timeout)
        except (TimeoutError, rtc.ConnectError) as e:
            raise CallError(f"cannot join room {name} at {opts.url}: {e or 'timed out'}") from None
        for p in room.remote_participants.values():
            state.on_participant(p)
        if not state.agent_joined.is_set():
            try:
                await asyncio.wait_for(state.agent_joined.wait(), timeout=opts.timeout)
            except TimeoutError:
                raise CallError(f"no agent joined the phone call's room {name} within {opts.timeout:.0f}s") from None
        yield Connected(state=state, line=RtpLine(rtp), joined_at=answered, room=name)
    finally:
        with contextlib.suppress(Exception):
            await dialog.bye()
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await state.close()
        await room.disconnect()
        await lk.aclose()
        rtp_t.close()
        sip_t.close()
