"""Small audio helpers shared by the caller, the tests and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
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


def read_wav(path: str | Path) -> Clip:
    """Decode an audio file to int16 mono at its own sample rate, through PyAV (FFmpeg).

    Plays every WAV encoding callers send (PCM of any width, float, G.711 µ-law/A-law) and
    any other format FFmpeg reads; anything else is an `AudioFileError` with one line.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioFileError(f"cannot read {p}: no such file")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise AudioFileError(f"{p} holds no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            if not rate or not 1000 <= rate <= 192000:
                raise AudioFileError(f"{p}: unsupported sample rate {rate}")
            mono = av.AudioResampler(format="s16", layout="mono", rate=rate)
            chunks = [f.to_ndarray().reshape(-1) for frame in container.decode(stream) for f in mono.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in mono.resample(None)]
    except AudioFileError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise AudioFileError(f"{p} is not a WAV file (nor other audio FFmpeg reads): {reason}") from None
    pcm = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, dtype=np.int16)
    if len(pcm) == 0:
        raise AudioFileError(f"{p} holds no audio samples")
    return Clip(path=p, pcm=pcm, sample_rate=rate)


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


