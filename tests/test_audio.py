"""WAV decoding for the caller: every fixture format, clear errors for the rest."""

from __future__ import annotations

import numpy as np
import pytest

from harness.audio import AudioFileError, read_wav, speech_bounds


def test_pcm_fixture_bounds_match_manifest(fixtures, manifest):
    clip = read_wav(fixtures / "capital_france.wav")
    assert clip.sample_rate == 16000
    start, end = clip.speech_bounds_s()
    m = manifest["capital_france.wav"]
    assert abs(start - m["leading_silence_s"]) < 0.15
    # espeak ends its own output with ~0.3 s of quiet before the 1.5 s of padding
    assert 0 <= (clip.duration_s - end) - m["trailing_silence_s"] < 0.5


def test_ulaw_decodes_to_the_same_speech(fixtures):
    pcm16 = read_wav(fixtures / "capital_france.wav")
    ulaw = read_wav(fixtures / "capital_france_8k_ulaw.wav")
    assert ulaw.sample_rate == 8000
    assert abs(ulaw.duration_s - pcm16.duration_s) < 0.05
    assert ulaw.speech_bounds_s() == pytest.approx(pcm16.speech_bounds_s(), abs=0.03)


def test_silence_has_no_speech(fixtures):
    assert read_wav(fixtures / "silence_5s.wav").speech_bounds_s() is None


def test_bounds_of_synthetic_tone():
    sr = 16000
    pcm = np.zeros(sr * 2, dtype=np.int16)
    pcm[sr // 2 : sr] = (np.sin(np.arange(sr // 2) * 0.1) * 8000).astype(np.int16)
    start, end = speech_bounds(pcm, sr)
    assert abs(start - 0.5) < 0.02 and abs(end - 1.0) < 0.02


@pytest.mark.parametrize("payload", [b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVEjunk", b"ID3 mp3 data"])
def test_garbage_is_rejected(tmp_path, payload):
    f = tmp_path / "x.wav"
    f.write_bytes(payload)
    with pytest.raises(AudioFileError):
        read_wav(f)
