"""Settings of the development tools (parley-call, parley-eval): the LiveKit server they
attach to and the agent they dispatch. pydantic-settings: environment, then `.env`."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.settings import SettingsError, one_line

__all__ = ["HarnessSettings", "SettingsError"]


class HarnessSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True,
        str_strip_whitespace=True,
    )

    livekit_url: str = Field("ws://127.0.0.1:7880", alias="LIVEKIT_URL")
    livekit_api_key: str = Field("devkey", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(SecretStr("secret"), alias="LIVEKIT_API_SECRET")
    agent_name: str = Field("parley", alias="PARLEY_AGENT_NAME")
    # Where the worker writes session reports, when it runs on this machine (per-stage figures).
    report_dir: str = Field("reports", alias="PARLEY_REPORT_DIR")

    @classmethod
    def load(cls, **overrides: Any) -> HarnessSettings:
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise SettingsError(one_line(e)) from None

    @property
    def secret(self) -> str:
        return self.livekit_api_secret.get_secret_value()
