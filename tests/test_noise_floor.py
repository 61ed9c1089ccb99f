"""The noise floor put under phone-band speech before Whisper hears it (agent/audio.py), without
the model."""

from __future__ import annotations

import numpy as np

from agent.audio import band_limited, phone_noise_floor, resample, whisper_passes, with_noise_floor
from harness.audio import read_wav

RATE = 16000


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _speech_then_silence() -> np.ndarray:
    t = np.arange(RATE) / RATE
    tone = 0.2 * np.sin(2 * np.pi * 220 * t)
    return np.concatenate([tone, np.zeros(RATE)]).astype(np.float32)


def test_floor_sits_the_asked_distance_under_the_speech_and_only_around_it():
    audio = np.concatenate([np.zeros(RATE, np.float32), _speech_then_silence()])  # silence, 1 s tone, silence
    out = with_noise_floor(audio, 40.0)
    added = out - audio
    speech = slice(RATE, 2 * RATE)
    assert abs(20 * np.log10(_rms(audio[speech]) / _rms(added[speech])) - 40.0) < 1.0
    assert out.dtype == np.float32 and len(out) == len(audio)
    # 0.2 s before the first sound to 0.3 s after the last: Whisper talks on into noise that
    # stands in for silence.
    assert not added[: int(0.79 * RATE)].any() and not added[int(2.31 * RATE):].any()
    assert _rms(added[int(0.81 * RATE): RATE]) > 0 and _rms(added[2 * RATE: int(2.29 * RATE)]) > 0


def test_floor_is_pink_and_repeatable():
    audio = _speech_then_silence()
    out = with_noise_floor(audio, 40.0)
    gap = (out - audio)[:RATE].astype(np.float64)
    power = np.abs(np.fft.rfft(gap)) ** 2
    freqs = np.fft.rfftfreq(len(gap), 1 / RATE)
    low = power[(freqs >= 250) & (freqs < 500)].mean()
    high = power[(freqs >= 4000) & (freqs < 8000)].mean()
    assert 10 * np.log10(low / high) > 9  # 1/f: ~12 dB from 250-500 Hz to 4-8 kHz; white noise: 0
    assert np.array_equal(out, with_noise_floor(_speech_then_silence(), 40.0))


def test_phone_audio_is_told_from_wide_band(fixtures):
    def at_16k(name: str) -> np.ndarray:
        clip = read_wav(fixtures / name)
        return resample(clip.pcm, clip.sample_rate, RATE).astype(np.float32) / 32768.0

    assert band_limited(at_16k("capital_france_8k_ulaw.wav"))
    assert not band_limited(at_16k("capital_france.wav"))
    assert not band_limited(at_16k("pink_noise_5s.wav"))
    assert not band_limited(np.zeros(RATE, np.float32)) and not band_limited(np.zeros(10, np.float32))
    # What Whisper hears: the floor under the phone clip only, and only when asked for.
    phone, wide = at_16k("capital_france_8k_ulaw.wav"), at_16k("capital_france.wav")
    assert phone_noise_floor(wide, 40.0) is wide and phone_noise_floor(phone, 0.0) is phone
    assert not np.array_equal(phone_noise_floor(phone, 40.0), phone)
    # Two passes for wide-band speech only, the first as it is; phone audio is heard once.
    passes = whisper_passes(wide, 40.0, 40.0)
    assert len(passes) == 2 and passes[0] is wide and not np.array_equal(passes[1], wide)
    assert len(whisper_passes(phone, 40.0, 40.0)) == 1
    assert whisper_passes(wide, 40.0, 0.0) == [wide]


def test_no_floor_when_off_empty_or_silent():
    audio = _speech_then_silence()
    assert with_noise_floor(audio, 0.0) is audio
    assert len(with_noise_floor(np.zeros(0, np.float32), 40.0)) == 0
    silent = np.zeros(RATE, np.float32)
    assert not with_noise_floor(silent, 40.0).any()


def test_audio_longer_than_the_noise_is_covered():
    audio = np.full(40 * RATE, 0.1, np.float32)
    out = with_noise_floor(audio, 40.0)
    assert len(out) == len(audio) and _rms(out[-RATE:] - 0.1) > 0
