"""The worker's one typed settings object (pydantic-settings).

Values come from the environment, then from `.env` in the working directory (real
environment variables win; an empty variable means "use the default"). Each variable has
one meaning; an invalid value raises `SettingsError` with one line naming the variable.
Secrets are `SecretStr`: never shown by repr, logs or `masked()`.

The token service (`tokens/settings.py`), the operator CLIs (`ops/settings.py`) and the
development tools (`harness/settings.py`) have their own settings objects.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .models import ENGLISH_ONLY_WHISPER, QWEN25_05B_NAMES, QWEN25_15B_NAMES, SMOLLM2_NAMES

# Tuned on SmolLM2-135M: it follows short, concrete prompts; longer rule lists make it ramble.
DEFAULT_INSTRUCTIONS = (
    "You are Parley, a helpful voice assistant talking with a user on the phone. "
    "Keep every answer to one short sentence in plain English. "
    "Remember what the user tells you, such as their name."
)
# The packaged local LLMs PARLEY_LLM_MODEL can name (agent/models.py llm_gguf), default first.
LOCAL_LLM_NAMES = (QWEN25_05B_NAMES[0], SMOLLM2_NAMES[0], QWEN25_15B_NAMES[0],
                   *QWEN25_05B_NAMES[1:], *SMOLLM2_NAMES[1:], *QWEN25_15B_NAMES[1:])
DEFAULT_LOCAL_LLM = LOCAL_LLM_NAMES[0]
DEFAULT_GREETING = "Hello, this is Parley. How can I help you today?"
DEFAULT_SIP_GREETING = "Thanks for calling Parley. How can I help you today?"
DEFAULT_SIP_OUTBOUND_GREETING = "Hello, this is Parley calling. Do you have a moment?"
DEFAULT_GOODBYE = "Thanks for calling Parley. Goodbye!"
DEFAULT_SIP_VOICEMAIL_MESSAGE = ("Hello, this is Parley calling. Sorry we missed you. "
                                 "Please call us back when you have a moment. Goodbye.")
# livekit-agents' levels (WARNING is accepted and written WARN, as the framework wants it).
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")
DEFAULT_TOOL_ACK = "One moment, let me look that up."
DEFAULT_FAILURE_APOLOGY = "Sorry, I had a problem there. Could you say that again?"
DEFAULT_KNOWLEDGE_FILE = Path(__file__).resolve().parent / "knowledge" / "faq.md"

# Defaults of the cloud providers when PARLEY_LLM_MODEL / PARLEY_TTS_VOICE are unset.
OPENAI_LLM_MODEL = "gpt-4o-mini"
OPENAI_TTS_VOICE = "alloy"

CLOUD_SELECTORS = ("PARLEY_STT", "PARLEY_LLM", "PARLEY_TTS")

# The languages multilingual Whisper recognises (ISO 639-1): what interpreter mode accepts.
WHISPER_LANGUAGES = frozenset(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu "
    "hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt "
    "ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue".split())


# The least PARLEY_VAD_MIN_SILENCE livekit-agents accepts beside a streaming turn detector
# (voice/audio_recognition.py: inference.eot.base.MIN_SILENCE_DURATION_MS + 50 ms).
VAD_MIN_SILENCE_FLOOR = 0.25

# Interpreter mode's default translator (agent/models.py), by the names it answers to.
BIG_TRANSLATOR = QWEN25_15B_NAMES


class SettingsError(ValueError):
    """A configuration value is missing or invalid (message names the variable)."""


def one_line(e: ValidationError, aliases: dict[str, str] | None = None) -> str:
    """The first validation error as `VARIABLE='value': reason` (what a person needs to fix it).
    `aliases` names a field by its variable where pydantic names it by the field (a default)."""
    err = e.errors()[0]
    name = ".".join(str(p) for p in err["loc"]) or "settings"
    name = (aliases or {}).get(name, name)
    reason = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, dict | SecretStr) or value is None:
        return f"{name}: {reason}"
    return f"{name}={value!r}: {reason}"


def _lower(v: Any) -> Any:
    return v.strip().lower() if isinstance(v, str) else v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True,
        str_strip_whitespace=True, hide_input_in_errors=False,
    )

    # LiveKit server and worker identity
    livekit_url: str = Field("ws://127.0.0.1:7880", alias="LIVEKIT_URL")
    livekit_api_key: str = Field("devkey", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(SecretStr("secret"), alias="LIVEKIT_API_SECRET")
    agent_name: str = Field("parley", alias="PARLEY_AGENT_NAME")

    # Pipeline and provider selection
    pipeline: Literal["cascade", "realtime"] = Field("cascade", alias="PARLEY_PIPELINE")
    stt: Literal["local", "deepgram"] = Field("local", alias="PARLEY_STT")
    llm: Literal["local", "openai"] = Field("local", alias="PARLEY_LLM")
    tts: Literal["local", "openai"] = Field("local", alias="PARLEY_TTS")
    # Default: on as soon as a cloud provider is selected (see _fallback_default).
    fallback: bool = Field(False, alias="PARLEY_FALLBACK")

    # Local models
    # tiny.en | base | a CTranslate2 Whisper dir. On the question set (scripts/bench_models.py), on a
    # 10 s window with beam 5: tiny.en word error rate 0.25 in ~0.15 s, base 0.23 in ~0.31 s (better on
    # 8 kHz phone audio, 0.43 vs 0.51, but it hears "uh-huh" as "Ha ha!"); the 30 s window cost
    # tiny.en ~0.45-0.65 s for the same errors.
    stt_model: str = Field("tiny.en", alias="PARLEY_STT_MODEL")
    stt_language: str = Field("en", alias="PARLEY_STT_LANGUAGE")
    stt_beam_size: int = Field(5, ge=1, le=10, alias="PARLEY_STT_BEAM_SIZE")
    # Whisper encodes a turn on a window this long (s) instead of its 30 s one; 0 = always 30 s.
    stt_window: float = Field(10.0, ge=0.0, le=30.0, alias="PARLEY_STT_WINDOW")
    # Phone-band speech (nothing above 4 kHz) gets pink noise this many dB under it before Whisper
    # hears it; 0 = none. It fills the empty band as a recording's noise floor would: tiny.en's word
    # error rate on the question set's phone clips ~0.5 -> 0.35-0.39 (README, "Latency", session 19).
    stt_phone_noise_floor_db: float = Field(40.0, ge=0.0, le=80.0, alias="PARLEY_STT_PHONE_NOISE_FLOOR_DB")
    # Wide-band speech is also decoded with pink noise this many dB under it, on Whisper's second
    # replica at the same time, and the transcript Whisper scores higher is kept; 0 = one pass.
    # tiny.en word error rate 0.194 -> 0.169 on 143 wide-band clips for ~55 ms a turn (README,
    # "Latency", session 20).
    stt_two_pass_floor_db: float = Field(40.0, ge=0.0, le=80.0, alias="PARLEY_STT_TWO_PASS_FLOOR_DB")
    # The model of the selected LLM: local, a name (qwen2.5-0.5b, smollm2-135m, qwen2.5-1.5b) or a
    # GGUF path; openai, a model name. The 1.5B (interpreter mode's translator, installed anyway)
    # keeps who is who in a conversation far better than the 0.5B and answers more questions right,
    # for ~0.2 s more per turn and ~1 GB more per job process (README, "Latency", session 18).
    llm_model: str = Field("", alias="PARLEY_LLM_MODEL")
    # Arithmetic, counting, days, dates and time answered exactly by agent/skills.py (local LLM).
    llm_skills: bool = Field(True, alias="PARLEY_LLM_SKILLS")
    llm_max_tokens: int = Field(96, ge=1, alias="PARLEY_LLM_MAX_TOKENS")
    llm_threads: int = Field(2, ge=1, alias="PARLEY_LLM_THREADS")
    # The local LLM evaluates the caller's words so far while they still talk (LlamaLLM.prefill_partial).
    llm_prefill_words: bool = Field(True, alias="PARLEY_LLM_PREFILL_WORDS")
    # The voice of the selected TTS: a Piper .onnx path (local; default joe) or a voice name (openai).
    tts_voice: str = Field("", alias="PARLEY_TTS_VOICE")
    model_dir: Path = Field(Path.home() / ".cache" / "parley", alias="PARLEY_MODEL_DIR")

    # Cloud credentials
    openai_api_key: SecretStr = Field(SecretStr(""), alias="OPENAI_API_KEY")
    openai_base_url: str = Field("", alias="OPENAI_BASE_URL")
    deepgram_api_key: SecretStr = Field(SecretStr(""), alias="DEEPGRAM_API_KEY")
    deepgram_base_url: str = Field("", alias="DEEPGRAM_BASE_URL")

    # Cloud provider options (agent/providers/deepgram_stt.py, openai_*.py, realtime.py)
    deepgram_model: str = Field("nova-3", alias="PARLEY_DEEPGRAM_MODEL")
    deepgram_language: str = Field("en-US", alias="PARLEY_DEEPGRAM_LANGUAGE")
    openai_tts_model: str = Field("gpt-4o-mini-tts", alias="PARLEY_TTS_MODEL")
    realtime_model: str = Field("gpt-realtime", alias="PARLEY_REALTIME_MODEL")
    realtime_voice: str = Field("marin", alias="PARLEY_REALTIME_VOICE")
    realtime_turn_detection: Literal["server_vad", "semantic_vad"] = Field(
        "server_vad", alias="PARLEY_REALTIME_TURN_DETECTION")
    realtime_vad_threshold: float = Field(0.5, ge=0.0, alias="PARLEY_REALTIME_VAD_THRESHOLD")
    realtime_silence_ms: int = Field(500, ge=50, alias="PARLEY_REALTIME_SILENCE_MS")
    realtime_prefix_padding_ms: int = Field(300, ge=0, alias="PARLEY_REALTIME_PREFIX_PADDING_MS")
    realtime_transcription_model: str = Field("gpt-4o-mini-transcribe", alias="PARLEY_REALTIME_TRANSCRIPTION_MODEL")
    # How long a cloud provider may stall (connect, first token/byte, between chunks)
    # before the local provider answers the turn instead.
    fallback_timeout: float = Field(5.0, ge=0.1, alias="PARLEY_FALLBACK_TIMEOUT")

    # Tools (agent/tools.py): offered only to models that can call them (never SmolLM2)
    tools: bool = Field(True, alias="PARLEY_TOOLS")
    knowledge_file: Path = Field(DEFAULT_KNOWLEDGE_FILE, alias="PARLEY_KNOWLEDGE_FILE")
    goodbye: str = Field(DEFAULT_GOODBYE, alias="PARLEY_GOODBYE")
    tool_ack: str = Field(DEFAULT_TOOL_ACK, alias="PARLEY_TOOL_ACK")  # spoken when a tool is still busy
    tool_ack_delay: float = Field(0.6, ge=0.0, alias="PARLEY_TOOL_ACK_DELAY")

    # Conversation behaviour
    instructions: str = Field(DEFAULT_INSTRUCTIONS, alias="PARLEY_INSTRUCTIONS")
    greeting: str = Field(DEFAULT_GREETING, alias="PARLEY_GREETING")
    # Typed chat (lk.chat, agent/textinput.py): longer messages are refused, faster ones dropped.
    chat_max_chars: int = Field(2000, ge=1, alias="PARLEY_CHAT_MAX_CHARS")
    chat_per_minute: float = Field(20.0, gt=0.0, alias="PARLEY_CHAT_PER_MINUTE")
    # Spoken when a local model raises mid-call (agent/faults.py); empty = stay silent.
    failure_apology: str = Field(DEFAULT_FAILURE_APOLOGY, alias="PARLEY_FAILURE_APOLOGY")
    # Silence that ends the VAD's speech segment. livekit-agents refuses a streaming turn
    # detector (ours, agent/providers/turn_detector.py) a VAD below its own 200 ms + 50 ms, and
    # it does so when each call's session starts: every call would fail, so the worker refuses.
    vad_min_silence: float = Field(0.25, ge=VAD_MIN_SILENCE_FLOOR, alias="PARLEY_VAD_MIN_SILENCE")
    endpointing_min_delay: float = Field(0.2, ge=0.0, alias="PARLEY_MIN_ENDPOINTING_DELAY")
    endpointing_max_delay: float = Field(2.0, ge=0.0, alias="PARLEY_MAX_ENDPOINTING_DELAY")
    # Caller speech that pauses the agent (barge-in); the words then decide (agent/barge_in.py).
    interrupt_min_duration: float = Field(0.05, ge=0.0, alias="PARLEY_INTERRUPT_MIN_DURATION")

    # Worker process management
    health_port: int = Field(8081, ge=0, le=65535, alias="PARLEY_HEALTH_PORT")
    drain_timeout: int = Field(120, ge=0, alias="PARLEY_DRAIN_TIMEOUT")
    # LiveKit's load is a fraction of capacity: above 1 a worker would never be full.
    load_threshold: float = Field(0.75, ge=0.0, le=1.0, alias="PARLEY_LOAD_THRESHOLD")
    max_calls: int = Field(2, ge=1, alias="PARLEY_MAX_CALLS")  # calls one worker serves at once
    load_cpu: bool = Field(True, alias="PARLEY_LOAD_CPU")  # also report measured CPU when higher
    idle_processes: int = Field(1, ge=0, alias="PARLEY_IDLE_PROCESSES")
    report_dir: Path = Field(Path("reports"), alias="PARLEY_REPORT_DIR")
    # Reports kept in PARLEY_REPORT_DIR: the newest N, none older than D days (0 = no limit),
    # so a pod's disk cannot fill with them and get the pod evicted.
    report_keep: int = Field(1000, ge=0, alias="PARLEY_REPORT_KEEP")
    report_max_age_days: float = Field(14.0, ge=0.0, alias="PARLEY_REPORT_MAX_AGE_DAYS")
    # A job process (one call) above this footprint (PSS, as the framework samples it every
    # 5 s) is killed alone, before it takes the pod down; 0 turns the limit off. Measured: a
    # job process with SmolLM2 + Whisper tiny.en is ~565 MB PSS loaded, ~0.6 GB in a call;
    # Qwen2.5-0.5B + Whisper base add ~0.4 GB. About twice the larger footprint.
    # Unset: 2048, or 3072 in interpreter mode with its 1.5B translator (~1.8 GB alone).
    job_memory_limit_mb: int = Field(2048, ge=0, alias="PARLEY_JOB_MEMORY_LIMIT_MB")
    log_level: str = Field("INFO", alias="PARLEY_LOG_LEVEL")
    # json: one object per line (production, log collectors); human: one readable line per
    # event with the call's room and participant (`make run` sets it).
    log_format: Literal["json", "human"] = Field("json", alias="PARLEY_LOG_FORMAT")

    # Observability (agent/metrics.py, agent/report.py, agent/tracing.py)
    metrics_port: int = Field(9100, ge=0, le=65535, alias="PARLEY_METRICS_PORT")  # 0: no /metrics
    # Loopback by default; the Kubernetes manifests set 0.0.0.0 so Prometheus can scrape the pod.
    metrics_host: str = Field("127.0.0.1", alias="PARLEY_METRICS_HOST")
    # Where job processes write their metric files (unset: a fresh directory per worker in /tmp).
    metrics_dir: Path | None = Field(None, alias="PARLEY_METRICS_DIR")
    # A turn slower than this (end of speech to first agent audio) is logged and counted.
    latency_budget_ms: int = Field(1500, ge=1, alias="PARLEY_LATENCY_BUDGET_MS")
    # Set: per-turn spans go to this OTLP/HTTP collector. Unset: no tracing at all.
    otel_endpoint: str = Field("", alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    # What the agent does on a phone line (agent/telephony.py)
    sip_transfer_to: str = Field("", alias="PARLEY_SIP_TRANSFER_TO")  # tel: or sip: URI for "press 0"
    sip_greeting: str = Field(DEFAULT_SIP_GREETING, alias="PARLEY_SIP_GREETING")
    sip_outbound_greeting: str = Field(DEFAULT_SIP_OUTBOUND_GREETING, alias="PARLEY_SIP_OUTBOUND_GREETING")
    # Outbound: listen first, tell a person from an answering machine (agent/amd.py); a
    # machine gets this message after its beep, then the agent hangs up.
    sip_amd: bool = Field(True, alias="PARLEY_SIP_AMD")
    sip_voicemail_message: str = Field(DEFAULT_SIP_VOICEMAIL_MESSAGE, alias="PARLEY_SIP_VOICEMAIL_MESSAGE")

    # Interpreter mode (agent/interpreter.py): translate between the call's two languages
    # (ISO 639-1, e.g. "en,es") instead of conversing.
    interpreter: bool = Field(False, alias="PARLEY_INTERPRETER")
    interpreter_languages: str = Field("en,es", alias="PARLEY_INTERPRETER_LANGUAGES")
    # The local translation model: a name agent/models.py knows, or a GGUF file.
    interpreter_model: str = Field(BIG_TRANSLATOR[0], alias="PARLEY_INTERPRETER_MODEL")

    @field_validator("pipeline", "stt", "llm", "tts", "realtime_turn_detection", "log_format", mode="before")
    @classmethod
    def _lower_choice(cls, v: Any) -> Any:
        return _lower(v)

    @field_validator("interpreter_languages", mode="after")
    @classmethod
    def _language_pair(cls, v: str) -> str:
        codes = [c.strip().lower() for c in v.split(",") if c.strip()]
        if len(codes) != 2 or codes[0] == codes[1]:
            raise ValueError("needs two different ISO 639-1 language codes, e.g. en,es")
        unknown = [c for c in codes if c not in WHISPER_LANGUAGES]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a language Whisper recognises (ISO 639-1 codes, e.g. en,es)")
        return ",".join(codes)

    @field_validator("stt_language", mode="after")
    @classmethod
    def _stt_language(cls, v: str, info: ValidationInfo) -> str:
        # Checked here: Whisper itself only refuses an unknown code at the first turn, and
        # tiny.en would ignore any other language without a word.
        code = v.strip().lower()
        if code not in WHISPER_LANGUAGES:
            raise ValueError(f"{v}: not a language Whisper recognises (an ISO 639-1 code, e.g. en, es)")
        if code != "en" and str(info.data.get("stt_model", "")).strip().lower() in ENGLISH_ONLY_WHISPER:
            raise ValueError(f"{code}: Whisper tiny.en hears English only; set PARLEY_STT_MODEL=base for {code}")
        return code

    @field_validator("endpointing_max_delay", mode="after")
    @classmethod
    def _endpointing_order(cls, v: float, info: ValidationInfo) -> float:
        # The framework would wait longer after a finished turn than after an unfinished one.
        low = info.data.get("endpointing_min_delay")
        if low is not None and v < low:
            raise ValueError(f"less than PARLEY_MIN_ENDPOINTING_DELAY ({low:g} s); the wait for an unfinished "
                             "turn must be at least the wait for a finished one")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        level = {"WARNING": "WARN"}.get(v.strip().upper(), v.strip().upper())  # the framework's spelling
        if level not in LOG_LEVELS:
            raise ValueError(f"{v!r} is not a log level (one of {', '.join(LOG_LEVELS)})")
        return level

    @field_validator("model_dir", "report_dir", "knowledge_file", "metrics_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @model_validator(mode="before")
    @classmethod
    def _fallback_default(cls, data: Any) -> Any:
        # A cloud provider gets the local one behind it unless PARLEY_FALLBACK says otherwise.
        if isinstance(data, dict) and data.get("PARLEY_FALLBACK", data.get("fallback")) in (None, ""):
            cloud = any(_lower(data.get(k, data.get(k.removeprefix("PARLEY_").lower()))) not in (None, "", "local")
                        for k in CLOUD_SELECTORS)
            realtime = _lower(data.get("PARLEY_PIPELINE", data.get("pipeline"))) == "realtime"
            data = {**data, "PARLEY_FALLBACK": cloud or realtime}
            data.pop("fallback", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _memory_default(cls, data: Any) -> Any:
        # The 1.5B model alone takes ~1.8 GB (interpreter mode's translator, or the conversation's
        # LLM when named): those job processes get 3 GB.
        if isinstance(data, dict) and data.get("PARLEY_JOB_MEMORY_LIMIT_MB", data.get("job_memory_limit_mb")) in (None, ""):
            interpreter = str(data.get("PARLEY_INTERPRETER", data.get("interpreter", ""))).strip().lower()
            model = str(data.get("PARLEY_INTERPRETER_MODEL", data.get("interpreter_model", BIG_TRANSLATOR[0])))
            llm = str(data.get("PARLEY_LLM", data.get("llm", "local"))).strip().lower()
            llm_model = str(data.get("PARLEY_LLM_MODEL", data.get("llm_model", ""))).strip().lower()
            big = ((interpreter in ("1", "true", "yes", "on") and model.strip().lower() in BIG_TRANSLATOR)
                   or (llm == "local" and llm_model in QWEN25_15B_NAMES))
            data = {**data, "PARLEY_JOB_MEMORY_LIMIT_MB": 3072 if big else 2048}
            data.pop("job_memory_limit_mb", None)
        return data

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise SettingsError(one_line(e, {n: f.alias for n, f in cls.model_fields.items() if f.alias})) from None

    # One variable, one meaning: these read the selected provider's value or its default.
    @property
    def openai_llm_model(self) -> str:
        return self.llm_model if self.llm == "openai" and self.llm_model else OPENAI_LLM_MODEL

    @property
    def local_llm(self) -> str:
        """The local LLM: a name from agent/models.py LOCAL_LLMS or a GGUF path."""
        return self.llm_model if self.llm == "local" and self.llm_model else DEFAULT_LOCAL_LLM

    @property
    def local_llm_path(self) -> Path | None:
        """PARLEY_LLM_MODEL as a GGUF path (None for a packaged model's name)."""
        if self.llm != "local" or not self.llm_model or self.llm_model.strip().lower() in LOCAL_LLM_NAMES:
            return None
        return Path(self.llm_model)

    @property
    def openai_tts_voice(self) -> str:
        return self.tts_voice if self.tts == "openai" and self.tts_voice else OPENAI_TTS_VOICE

    @property
    def piper_voice_path(self) -> Path | None:
        return Path(self.tts_voice) if self.tts == "local" and self.tts_voice else None

    @property
    def interpreter_pair(self) -> tuple[str, str]:
        a, b = self.interpreter_languages.split(",")
        return a, b

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
            if not getattr(self, var.lower()).get_secret_value():
                raise SettingsError(f"{selected} needs {var}, which is not set (environment or .env)")
        if self.pipeline == "cascade" and (p := self.piper_voice_path) and not p.is_file():
            raise SettingsError(f"PARLEY_TTS_VOICE={self.tts_voice!r}: with PARLEY_TTS=local it must be a Piper .onnx file")
        if (p := self.local_llm_path) and not p.is_file():
            raise SettingsError(f"PARLEY_LLM_MODEL={self.llm_model!r}: with PARLEY_LLM=local it must be a GGUF file "
                                f"or one of {', '.join(LOCAL_LLM_NAMES[:3])}")
        if self.tools and self.cloud_llm and not self.knowledge_file.is_file():
            raise SettingsError(f"PARLEY_KNOWLEDGE_FILE={str(self.knowledge_file)!r} is not a readable file")
        if self.otel_endpoint and not re.match(r"^https?://[^/\s]+", self.otel_endpoint):
            raise SettingsError(f"OTEL_EXPORTER_OTLP_ENDPOINT={self.otel_endpoint!r} is not an http(s):// URL")
        for url_var in ("OPENAI_BASE_URL", "DEEPGRAM_BASE_URL"):
            url = getattr(self, url_var.lower())
            if url and not re.match(r"^(https?|wss?)://[^/\s]+", url):
                raise SettingsError(f"{url_var}={url!r} is not an http(s):// or ws(s):// URL")

    def masked(self) -> dict[str, str]:
        """Effective configuration with secrets masked, for logs and `parley-config`."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                value = f"{raw[:3]}…({len(raw)} chars)" if raw else ""
            out[name] = str(value)
        return out

