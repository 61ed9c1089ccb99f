"""Cloud provider configuration: one switch per stage, keys checked at start-up (one line,
no traceback), secrets masked, and the options reaching each plugin as configured."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from livekit.agents import AgentSession

from agent.providers.deepgram_stt import DeepgramOptions
from agent.providers.realtime import RealtimeOptions, realtime_model
from agent.settings import Settings, SettingsError
from harness.devstack import BIN, ROOT
from tests.fakes import RealtimeFake


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith(("PARLEY_", "LIVEKIT_", "OPENAI_", "DEEPGRAM_")):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def start_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "python"), "-m", "agent", "start"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"], **env})


@pytest.mark.parametrize(
    ("env", "variable"),
    [({"PARLEY_LLM": "openai"}, "OPENAI_API_KEY"),
     ({"PARLEY_TTS": "openai"}, "OPENAI_API_KEY"),
     ({"PARLEY_STT": "deepgram", "OPENAI_API_KEY": "sk-x"}, "DEEPGRAM_API_KEY"),
     ({"PARLEY_PIPELINE": "realtime"}, "OPENAI_API_KEY"),
     ({"PARLEY_LLM": "openai", "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "localhost:8080"}, "OPENAI_BASE_URL")],
)
@pytest.mark.e2e  # starts a process
def test_worker_refuses_a_cloud_provider_without_its_key(env, variable):
    p = start_worker(env)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_key_in_dotenv_is_enough(clean_env, tmp_path):
    (tmp_path / ".env").write_text("PARLEY_LLM=openai\nOPENAI_API_KEY=sk-from-dotenv\n")
    s = Settings.load()
    s.check_providers()
    assert s.llm == "openai" and s.openai_api_key.get_secret_value() == "sk-from-dotenv" and s.fallback is True


def test_local_stack_needs_no_key(clean_env):
    Settings.load().check_providers()


def test_contract_variables(clean_env):
    for k, v in {"PARLEY_STT": "deepgram", "PARLEY_LLM": "openai", "PARLEY_TTS": "openai",
                 "PARLEY_FALLBACK": "0", "PARLEY_LLM_MODEL": "llama-3.1-8b-instant", "PARLEY_TTS_VOICE": "nova",
                 "OPENAI_API_KEY": "sk-abcdef123456", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                 "DEEPGRAM_API_KEY": "dg-abcdef123456"}.items():
        clean_env.setenv(k, v)
    s = Settings.load()
    s.check_providers()
    assert (s.stt, s.llm, s.tts, s.pipeline, s.fallback) == ("deepgram", "openai", "openai", "cascade", False)
    assert (s.openai_llm_model, s.openai_tts_voice) == ("llama-3.1-8b-instant", "nova")
    masked = s.masked()
    assert "abcdef123456" not in str(masked) and masked["openai_base_url"] == "http://127.0.0.1:9/v1"


@pytest.mark.e2e  # starts a process
def test_parley_config_masks_keys(clean_env):
    env = {"PATH": "/usr/bin:/bin", "PARLEY_LLM": "openai", "OPENAI_API_KEY": "sk-verysecretkey99"}
    p = subprocess.run([str(BIN / "parley-config")], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 0 and "verysecretkey99" not in p.stdout and '"llm": "openai"' in p.stdout


@pytest.mark.parametrize("var", ["PARLEY_REALTIME_TURN_DETECTION", "PARLEY_FALLBACK_TIMEOUT", "PARLEY_TOOLS"])
def test_invalid_cloud_options_name_the_variable(clean_env, var):
    clean_env.setenv(var, "bogus")
    with pytest.raises(SettingsError, match=var):
        Settings.load()


def test_local_voice_must_be_a_file(clean_env):
    clean_env.setenv("PARLEY_TTS_VOICE", "nova")  # an OpenAI voice name, but PARLEY_TTS is local
    with pytest.raises(SettingsError, match="PARLEY_TTS_VOICE"):
        Settings.load().check_providers()
    clean_env.setenv("PARLEY_PIPELINE", "realtime")  # Piper only speaks fixed phrases there
    clean_env.setenv("OPENAI_API_KEY", "sk-x")
    Settings.load().check_providers()


def test_each_voice_variable_has_one_meaning(clean_env):
    clean_env.setenv("PARLEY_PIPELINE", "realtime")
    clean_env.setenv("OPENAI_API_KEY", "sk-x")
    clean_env.setenv("PARLEY_REALTIME_VOICE", "nova")
    clean_env.setenv("PARLEY_TTS", "openai")
    clean_env.setenv("PARLEY_TTS_VOICE", "shimmer")
    s = Settings.load()
    assert RealtimeOptions.from_settings(s).voice == "nova" and s.openai_tts_voice == "shimmer"


@pytest.mark.parametrize(("base", "url"), [
    ("", "https://api.deepgram.com/v1/listen"),
    ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/listen"),
    ("http://127.0.0.1:9/", "http://127.0.0.1:9/v1/listen"),
    ("wss://dg.example/v1/listen", "wss://dg.example/v1/listen"),
])
def test_deepgram_url(base, url):
    assert DeepgramOptions(api_key="k", base_url=base).listen_url == url


async def test_realtime_options_reach_the_server():
    with RealtimeFake() as fake:
        s = Settings(pipeline="realtime", openai_api_key="sk-rt-unit", openai_base_url=fake.base_url,
                     realtime_model="rt-unit", realtime_turn_detection="semantic_vad",
                     realtime_voice="coral", realtime_transcription_model="whisper-1")
        model = realtime_model(RealtimeOptions.from_settings(s))
        session = AgentSession(llm=model)
        from agent.assistant import ParleyAgent
        await session.start(ParleyAgent(s, greeting=""))
        for _ in range(50):
            if fake.session.get("tools"):
                break
            await asyncio.sleep(0.1)
        await session.aclose()
        await model.aclose()
    (conn,) = fake.requests
    assert conn.query["model"] == "rt-unit" and conn.headers["Authorization"] == "Bearer sk-rt-unit"
    audio = fake.session["audio"]
    assert audio["input"]["turn_detection"]["type"] == "semantic_vad"
    assert audio["input"]["transcription"]["model"] == "whisper-1"
    assert audio["output"]["voice"] == "coral"
    assert {t["name"] for t in fake.session["tools"]} == {"end_call", "lookup"}
    assert "Parley" in fake.session["instructions"]
