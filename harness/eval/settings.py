"""parley-eval's settings: the dev tools' (LiveKit server, agent, report directory) plus the
judge and the phone line. pydantic-settings: environment, then `.env`."""

from __future__ import annotations

from pydantic import Field, SecretStr

from ..settings import HarnessSettings, SettingsError

__all__ = ["EvalSettings", "SettingsError"]


class EvalSettings(HarnessSettings):
    # Any OpenAI-compatible chat completions endpoint; unset = judge turns are skipped.
    judge_url: str = Field("", alias="PARLEY_EVAL_JUDGE_URL")
    judge_model: str = Field("", alias="PARLEY_EVAL_JUDGE_MODEL")
    judge_key: SecretStr = Field(SecretStr(""), alias="PARLEY_EVAL_JUDGE_KEY")
    # --transport sip: where livekit-sip listens and the inbound number (as `make sip-up` sets them).
    sip_host: str = Field("127.0.0.1", alias="PARLEY_SIP_HOST")
    sip_port: int = Field(5060, ge=1, le=65535, alias="PARLEY_SIP_PORT")
    sip_number: str = Field("+15550100", alias="PARLEY_SIP_NUMBER")
