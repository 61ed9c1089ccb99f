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


# Phone-band speech sits at -44 to -80 dB (high_band_db), wide-band speech at -14 to -37 dB: halfway.
PHONE_BAND_DB = -42.0


def high_band_db(audio: np.ndarray, rate: int = 16000) -> float:
    """Power in 4.3-7.8 kHz against 0.3-3.4 kHz, in dB: -75 to -80 for the question set's phone
    clips (8 kHz audio, upsampled), -44 to -63 in calls (after Opus and WebRTC), -14 to -37 for
    wide-band speech, clean or noisy. 0 for audio too short or silent to tell."""
    if len(audio) < rate // 10:
        return 0.0
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    hz = np.fft.rfftfreq(len(audio), 1 / rate)
    high = power[(hz >= 4300) & (hz < 7800)].sum()
    speech = power[(hz >= 300) & (hz < 3400)].sum()
    if speech <= 0:
        return 0.0
    return float(10 * np.log10(max(high / speech, 1e-12)))


def band_limited(audio: np.ndarray, rate: int = 16000) -> bool:
    """Speech with (next to) nothing above 4 kHz: a phone line's 8 kHz audio, upsampled."""
    return high_band_db(audio, rate) < PHONE_BAND_DB


def with_noise_floor(audio: np.ndarray, below_db: float, rate: int = 16000) -> np.ndarray:
    """Mono float audio with pink noise `below_db` under its speech level (RMS of the samples
    above -40 dBFS), from 0.2 s before its first sound to 0.3 s after its last. Whisper learnt from
    recordings, which always have a noise floor; a phone line's audio, upsampled, leaves the band
    above 4 kHz empty, log-mel frames Whisper rarely saw. A floor 40 dB down cut tiny.en's word
    error rate on the question set's phone clips from 0.47-0.55 to 0.35-0.39 and on held-out phone
    clips from 0.50-0.55 to 0.45 (README "Latency", session 19). Not over the silence around the speech: a
    call's segment holds ~0.5 s of it, where Whisper went on to say the sentence again."""
    if below_db <= 0 or len(audio) == 0:
        return audio
    loud = np.abs(audio) > 0.01
    if not loud.any():
        return audio
    speech = audio[loud]
    level = float(np.sqrt(np.mean(speech * speech)))
    first, last = int(np.argmax(loud)), len(audio) - int(np.argmax(loud[::-1]))
    start, end = max(0, first - rate // 5), min(len(audio), last + int(rate * 0.3))
    out = audio.astype(np.float32, copy=True)
    out[start:end] += np.resize(_pink_noise(), end - start) * (level * 10 ** (-below_db / 20))
    return out


def phone_noise_floor(audio: np.ndarray, below_db: float) -> np.ndarray:
    """What Whisper hears: phone-band speech with the noise floor under it, anything else as is."""
    return whisper_passes(audio, below_db)[0]


def whisper_passes(audio: np.ndarray, phone_floor_db: float, wide_floor_db: float = 0.0) -> list[np.ndarray]:
    """What Whisper hears, one array per decoding pass: phone-band speech once, with the noise
    floor `phone_floor_db` under it (see `with_noise_floor`); wide-band speech as it is and, when
    `wide_floor_db` > 0, a second time with a floor that far under it. Of two passes the transcript
    Whisper scores higher is kept: on wide-band speech the floor helps some clips and hurts others
    ("What is the capital of France?" -> "... and friends?"), and Whisper's own score tells them
    apart well enough to cut tiny.en's word error rate 0.194 -> 0.169 over 143 clips (README
    "Latency", session 20)."""
    if phone_floor_db > 0 and band_limited(audio):
        return [with_noise_floor(audio, phone_floor_db)]
    if wide_floor_db > 0:
        return [audio, with_noise_floor(audio, wide_floor_db)]
    return [audio]


def prepare_noise_floor() -> None:
    """Make the noise at start-up (a 30 s FFT, ~30 ms), not in a call's first phone turn."""
    _pink_noise()
