"""RTP helpers for the SIP tests: build the pcap sipp plays, record what the far end sends.

sipp (`play_pcap_audio`) replays the UDP payloads of a pcap at the pcap's own timing,
so the caller's G.711 stream is made here from the fixture's µ-law bytes, untouched.
The agent's RTP goes to a `RtpRecorder` socket, the address sipp's SDP offers.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PCMU = 0
RATE = 8000
PTIME_S = 0.02
SAMPLES_PER_PACKET = int(RATE * PTIME_S)  # 160
ULAW_SILENCE = 0xFF
# Agent RTP above this RMS (int16 units, as parley-call's AGENT_SPEECH_RMS) counts as voice.
VOICE_RMS = 500.0


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8)
    sign = u & 0x80
    exponent = ((u >> 4) & 0x07).astype(np.int32)
    mantissa = (u & 0x0F).astype(np.int32)
    value = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -value, value).astype(np.int16)


def wav_ulaw_payload(path: Path) -> bytes:
    """The raw data chunk of a G.711 µ-law WAV (format tag 7, 8 kHz mono)."""
    data = path.read_bytes()
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHI", data[pos + 8 : pos + 16])
        elif cid == b"data":
            payload = data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    if fmt != (7, 1, RATE) or payload is None:
        raise ValueError(f"{path} is not 8 kHz mono µ-law WAV (fmt={fmt})")
    return payload


@dataclass(frozen=True)
class Stream:
    """A caller's µ-law stream: lead silence, the clip, trailing silence."""

    ulaw: bytes
    speech_start_s: float  # offsets of the clip's first/last loud 10 ms within the stream
    speech_end_s: float

    @property
    def duration_s(self) -> float:
        return len(self.ulaw) / RATE


def caller_stream(clip_ulaw: bytes, *, lead_s: float, tail_s: float) -> Stream:
    lead = bytes([ULAW_SILENCE]) * int(lead_s * RATE)
    tail = bytes([ULAW_SILENCE]) * int(tail_s * RATE)
    pcm = ulaw_decode(clip_ulaw).astype(np.float64)
    win = RATE // 100
    n = len(pcm) // win
    loud = np.flatnonzero(np.sqrt((pcm[: n * win].reshape(n, win) ** 2).mean(axis=1)) > 100.0)
    if len(loud) == 0:
        raise ValueError("the clip is silent")
    return Stream(
        ulaw=lead + clip_ulaw + tail,
        speech_start_s=lead_s + loud[0] * win / RATE,
        speech_end_s=lead_s + (loud[-1] + 1) * win / RATE,
    )


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def write_pcap(path: Path, packets: list[tuple[float, bytes]], *, src_port: int = 6000, dst_port: int = 6000) -> None:
    """Ethernet/IPv4/UDP pcap (what sipp's play_pcap_audio reads); ports are rewritten by sipp."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # LINKTYPE_ETHERNET
    for i, (t, payload) in enumerate(packets):
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        sec = int(t)
        out.append(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def stream_pcap(path: Path, stream: Stream, *, ssrc: int = 0x5A17C0DE) -> None:
    pkts = []
    for i in range(len(stream.ulaw) // SAMPLES_PER_PACKET):
        chunk = stream.ulaw[i * SAMPLES_PER_PACKET : (i + 1) * SAMPLES_PER_PACKET]
        pkts.append((i * PTIME_S, rtp_packet(PCMU, i, i * SAMPLES_PER_PACKET, ssrc, chunk, marker=i == 0)))
    write_pcap(path, pkts)


@dataclass
class Received:
    t: float  # wall clock (time.time()) at arrival
    pt: int
    seq: int
    payload: bytes


@dataclass
class RtpRecorder:
    """A UDP socket on 127.0.0.1 that keeps every RTP packet it receives, with arrival times."""

    packets: list[Received] = field(default_factory=list)
    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        # An even port, as RTP expects (RFC 3550), so the SDP is unremarkable.
        for _ in range(50):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            try:
                self.sock.bind(("127.0.0.1", port - port % 2))
                break
            except OSError:
                continue
        self.sock.settimeout(0.2)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> RtpRecorder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) >= 12 and data[0] >> 6 == 2:
                self.packets.append(Received(time.time(), data[1] & 0x7F, struct.unpack("!H", data[2:4])[0],
                                             data[12:]))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        self.sock.close()

    def voice_times(self, pt: int = PCMU, threshold: float = VOICE_RMS) -> list[float]:
        """Arrival times of packets whose decoded audio is louder than `threshold`."""
        out = []
        for p in self.packets:
            if p.pt == pt and p.payload:
                x = ulaw_decode(p.payload).astype(np.float64)
                if float(np.sqrt(np.mean(x * x))) > threshold:
                    out.append(p.t)
        return out

    def audio(self, pt: int = PCMU) -> np.ndarray:
        """Everything received, decoded and concatenated in arrival order (8 kHz int16)."""
        chunks = [ulaw_decode(p.payload) for p in self.packets if p.pt == pt]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
