"""Audio helpers the worker itself needs (file decoding for callers lives in harness/audio.py)."""

from __future__ import annotations

import functools

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


# Seeded, so a clip is recognized the same way every time.
_PINK_SEED = 20261207


@functools.cache
def _pink_noise() -> np.ndarray:
    size = 30 * 16000
    spectrum = np.fft.rfft(np.random.default_rng(_PINK_SEED).standard_normal(size))
    hz = np.fft.rfftfreq(size, 1 / 16000)
    # 1/f power from 50 Hz up; below that it would only make the level wander from second to second.
    scale = np.where(hz >= 50, 1.0 / np.sqrt(np.maximum(hz, 50)), 0.0)
    noise = np.fft.irfft(spectrum * scale, size)
    return (noise / np.sqrt(np.mean(noise * noise))).astype(np.float32)


def band_limited(audio: np.ndarray, rate: int = 16000) -> bool:
    """Speech with (next to) nothing above 4 kHz: a phone line's 8 kHz audio, upsampled. The band
    4.3-7.8 kHz against 0.3-3.4 kHz: -75 to -80 dB for the question set's phone clips, -48 to -63 dB
    after Opus and WebRTC, -15 to -37 dB for wide-band speech, clean or noisy."""
    if len(audio) < rate // 10:
        return False
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    hz = np.fft.rfftfreq(len(audio), 1 / rate)
    high = power[(hz >= 4300) & (hz < 7800)].sum()
    speech = power[(hz >= 300) & (hz < 3400)].sum()
    return speech > 0 and high < speech * 10 ** (-45 / 10)


def with_noise_floor(audio: np.ndarray, below_db: float) -> np.ndarray:
    """Mono float audio with pink noise `below_db` under its speech level (RMS of the samples
    above -40 dBFS). Whisper learnt from recordings, which always have a noise floor; a phone
    line's audio, upsampled, leaves the band above 4 kHz empty, log-mel frames Whisper rarely saw.
    A floor 40 dB down cut tiny.en's word error rate on the question set's phone clips from 0.49
    to 0.35 and on held-out phone clips from 0.53 to 0.46 (README "Latency", session 19)."""
    if below_db <= 0 or len(audio) == 0:
        return audio
    loud = audio[np.abs(audio) > 0.01]
    speech = loud if len(loud) else audio
    level = float(np.sqrt(np.mean(speech * speech)))
    if level == 0.0:
        return audio
    noise = np.resize(_pink_noise(), len(audio))
    return (audio + noise * (level * 10 ** (-below_db / 20))).astype(np.float32)
