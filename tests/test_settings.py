"""Configuration: typed, validated, one-line errors naming the variable."""

from __future__ import annotations

import subprocess

import pytest

from agent.settings import Settings, SettingsError
from harness.devstack import BIN, ROOT


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in list(__import__("os").environ):
        if k.startswith(("PARLEY_", "LIVEKIT_", "OPENAI_", "DEEPGRAM_")):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_are_offline(clean_env):
    s = Settings.load()
    assert (s.stt, s.llm, s.tts, s.pipeline) == ("local", "local", "local", "cascade")
    assert s.agent_name == "parley" and s.livekit_url.startswith("ws://127.0.0.1")
    assert s.fallback is False


def test_dotenv_is_read_and_env_wins(clean_env, tmp_path):
    (tmp_path / ".env").write_text("PARLEY_AGENT_NAME=from-dotenv\nPARLEY_DRAIN_TIMEOUT=42\n")
    clean_env.setenv("PARLEY_DRAIN_TIMEOUT", "7")
    s = Settings.load()
    assert s.agent_name == "from-dotenv" and s.drain_timeout == 7


@pytest.mark.parametrize(
    ("var", "value"),
    [("PARLEY_STT", "whisperx"), ("PARLEY_DRAIN_TIMEOUT", "soon"), ("PARLEY_FALLBACK", "maybe"),
     ("PARLEY_VAD_MIN_SILENCE", "-1"), ("PARLEY_VAD_MIN_SILENCE", "0.15"), ("PARLEY_PIPELINE", "duplex"),
     ("PARLEY_STT_LANGUAGE", "xx"), ("PARLEY_STT_LANGUAGE", "es")],  # es: tiny.en (the default) hears English only
)
def test_invalid_values_name_the_variable(clean_env, var, value):
    clean_env.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        Settings.load()


def test_endpointing_delays_in_order(clean_env):
    clean_env.setenv("PARLEY_MIN_ENDPOINTING_DELAY", "3")
    with pytest.raises(SettingsError, match="PARLEY_MAX_ENDPOINTING_DELAY"):
        Settings.load()
    clean_env.setenv("PARLEY_MAX_ENDPOINTING_DELAY", "3")
    assert Settings.load().endpointing_max_delay == 3.0


def test_stt_language_with_a_multilingual_whisper(clean_env):
    clean_env.setenv("PARLEY_STT_MODEL", "base")
    clean_env.setenv("PARLEY_STT_LANGUAGE", " ES ")
    assert Settings.load().stt_language == "es"


def test_packaged_llms_by_name_and_their_job_memory(clean_env):
    assert Settings.load().job_memory_limit_mb == 2048
    for name in ("qwen2.5-1.5b", "Qwen2.5-Coder-1.5B"):
        clean_env.setenv("PARLEY_LLM_MODEL", name)
        s = Settings.load()
        # a packaged model's name, not a file path; its ~1.8 GB gets the 3 GB job limit
        assert s.local_llm_path is None and s.job_memory_limit_mb == 3072
    clean_env.setenv("PARLEY_JOB_MEMORY_LIMIT_MB", "2500")
    assert Settings.load().job_memory_limit_mb == 2500
    clean_env.delenv("PARLEY_JOB_MEMORY_LIMIT_MB")
    clean_env.setenv("PARLEY_LLM_MODEL", "smollm2-135m")
    assert Settings.load().job_memory_limit_mb == 2048
    clean_env.setenv("PARLEY_LLM_MODEL", "qwen2.5-1.5b")
    clean_env.setenv("PARLEY_LLM", "openai")  # then PARLEY_LLM_MODEL names a cloud model
    assert Settings.load().job_memory_limit_mb == 2048


def test_cloud_selection_turns_fallback_on(clean_env):
    clean_env.setenv("PARLEY_LLM", "openai")
    assert Settings.load().fallback is True
    clean_env.setenv("PARLEY_FALLBACK", "0")
    assert Settings.load().fallback is False


def test_masked_hides_secrets(clean_env):
    clean_env.setenv("LIVEKIT_API_SECRET", "supersecretvalue1234")
    masked = Settings.load().masked()
    assert "supersecretvalue1234" not in str(masked)
    assert masked["livekit_api_key"] == "devkey"


@pytest.mark.e2e  # starts a process
@pytest.mark.parametrize(("var", "value"), [("PARLEY_STT", "nope"), ("PARLEY_STT_MODEL", "/nonexistent/whisper")])
def test_worker_refuses_bad_config_with_one_line(var, value):
    p = subprocess.run([str(BIN / "python"), "-m", "agent", "start"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/bin", var: value})
    assert p.returncode != 0
    assert var in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.e2e  # starts a process
def test_worker_refuses_busy_health_port():
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([str(BIN / "python"), "-m", "agent", "start"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "PARLEY_HEALTH_PORT": str(port)})
    assert p.returncode != 0
    assert str(port) in p.stderr and "Traceback" not in p.stderr, p.stderr
