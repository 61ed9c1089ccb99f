"""Small audio helpers shared by the caller, the tests and the benchmarks."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Below this RMS (int16 units, about -50 dBFS) a 10 ms window counts as silence.
SILENCE_RMS = 100.0


class AudioFileError(ValueError):
    """The file is not audio we can play (message is a one-line reason)."""


@dataclass(frozen=True)
class Clip:
    path: Path
    pcm: np.ndarray  # int16 mono
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate

    def speech_bounds_s(self, rms: float = SILENCE_RMS) -> tuple[float, float] | None:
        """(first, last) non-silent instants in seconds, or None for a silent clip."""
        return speech_bounds(self.pcm, self.sample_rate, rms)


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    value = magnitude - 0x84
    return np.where(sign != 0, -value, value).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.uint8) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = (a & 0x0F).astype(np.int32)
    value = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, value, -value).astype(np.int16)


_ULAW = _ulaw_table()
_ALAW = _alaw_table()


def read_wav(path: str | Path) -> Clip:
    """Decode a WAV file (16-bit PCM, 8/24/32-bit PCM, float, G.711 µ-law/A-law) to int16 mono."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise AudioFileError(f"cannot read {p}: {e.strerror or e}") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFileError(f"{p} is not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: real tag in the GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            payload = body
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise AudioFileError(f"{p} is a damaged WAV file (missing fmt or data chunk)")
    tag, channels, rate, bits = fmt
    if channels < 1 or not 1000 <= rate <= 192000:
        raise AudioFileError(f"{p}: unsupported WAV layout ({channels} channels at {rate} Hz)")
    if tag == 1 and bits == 16:
        samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2").astype(np.int32)
    elif tag == 1 and bits == 8:
        samples = (np.frombuffer(payload, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif tag == 1 and bits in (24, 32):
        width = bits // 8
        raw = np.frombuffer(payload[: len(payload) // width * width], dtype=np.uint8).reshape(-1, width)
        samples = raw[:, -2:].copy().view("<i2").reshape(-1).astype(np.int32)
    elif tag == 3 and bits == 32:
        f = np.frombuffer(payload[: len(payload) // 4 * 4], dtype="<f4")
        samples = (np.clip(f, -1.0, 1.0) * 32767).astype(np.int32)
    elif tag == 7 and bits == 8:
        samples = _ULAW[np.frombuffer(payload, dtype=np.uint8)].astype(np.int32)
    elif tag == 6 and bits == 8:
        samples = _ALAW[np.frombuffer(payload, dtype=np.uint8)].astype(np.int32)
    else:
        raise AudioFileError(
            f"{p}: unsupported WAV encoding (format tag {tag}, {bits} bits); "
            "use 16-bit PCM or G.711 µ-law"
        )
    n = len(samples) // channels * channels
    if n == 0:
        raise AudioFileError(f"{p} holds no audio samples")
    mono = samples[:n].reshape(-1, channels).mean(axis=1)
    return Clip(path=p, pcm=np.clip(mono, -32768, 32767).astype(np.int16), sample_rate=rate)


def rms(pcm: np.ndarray) -> float:
    if len(pcm) == 0:
        return 0.0
    x = pcm.astype(np.float64)
    return float(np.sqrt(np.mean(x * x)))


def speech_bounds(pcm: np.ndarray, sample_rate: int, threshold: float = SILENCE_RMS) -> tuple[float, float] | None:
    win = max(1, sample_rate // 100)
    n = len(pcm) // win
    if n == 0:
        return None
    frames = pcm[: n * win].astype(np.float64).reshape(n, win)
    loud = np.flatnonzero(np.sqrt((frames * frames).mean(axis=1)) > threshold)
    if len(loud) == 0:
        return None
    return loud[0] * win / sample_rate, (loud[-1] + 1) * win / sample_rate


