"""Audio helpers the worker itself needs (file decoding for callers lives in harness/audio.py)."""

from __future__ import annotations

import numpy as np


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling through LiveKit's resampler (soxr)."""
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm
    from livekit import rtc

    r = rtc.AudioResampler(src_rate, dst_rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH)
    frames = r.push(rtc.AudioFrame(pcm.tobytes(), src_rate, 1, len(pcm))) + r.flush()
    if not frames:
        return pcm[:0]
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
