"""Settings of the operator CLIs (`parley-sip`, `parley-dial`) and the telephony stack that
`make sip-up` starts: pydantic-settings, environment then `.env`, one line per bad value."""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent.settings import SettingsError, one_line

__all__ = ["LiveKitClientSettings", "OpsSettings", "SettingsError"]


class LiveKitClientSettings(BaseSettings):
    """The LiveKit server a tool talks to and the agent it dispatches (the operator CLIs here,
    the development tools in harness/settings.py)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True,
        str_strip_whitespace=True,
    )

    livekit_url: str = Field("ws://127.0.0.1:7880", alias="LIVEKIT_URL")
    livekit_api_key: str = Field("devkey", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(SecretStr("secret"), alias="LIVEKIT_API_SECRET")
    agent_name: str = Field("parley", alias="PARLEY_AGENT_NAME")

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise SettingsError(one_line(e)) from None

    @property
    def secret(self) -> str:
        return self.livekit_api_secret.get_secret_value()


class OpsSettings(LiveKitClientSettings):
    redis_address: str = Field("127.0.0.1:6379", alias="PARLEY_REDIS_ADDRESS")  # livekit-server + livekit-sip
    sip_port: int = Field(5060, ge=1, le=65535, alias="PARLEY_SIP_PORT")  # UDP and TCP on 127.0.0.1
    sip_rtp_ports: str = Field("10000-10099", alias="PARLEY_SIP_RTP_PORTS")
    sip_number: str = Field("+15550100", alias="PARLEY_SIP_NUMBER")  # the inbound number callers dial
    # Who may call in (IPs or CIDRs), comma-separated.
    sip_allowed_addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        ("127.0.0.1",), alias="PARLEY_SIP_ALLOWED_ADDRESSES")
    sip_auth_username: str = Field("", alias="PARLEY_SIP_AUTH_USERNAME")  # optional digest auth inbound
    sip_auth_password: SecretStr = Field(SecretStr(""), alias="PARLEY_SIP_AUTH_PASSWORD")
    sip_outbound_address: str = Field("127.0.0.1:5070", alias="PARLEY_SIP_OUTBOUND_ADDRESS")
    sip_outbound_number: str = Field("", alias="PARLEY_SIP_OUTBOUND_NUMBER")  # caller ID (default: sip_number)
    sip_room_prefix: str = Field("call-", alias="PARLEY_SIP_ROOM_PREFIX")  # room per caller: <prefix><random>

    @field_validator("sip_allowed_addresses", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(x.strip() for x in v.split(",") if x.strip()) or ("127.0.0.1",)
        return v

    @field_validator("sip_rtp_ports")
    @classmethod
    def _port_range(cls, v: str) -> str:
        m = re.fullmatch(r"(\d+)-(\d+)", v)
        if not m or not 1024 <= int(m[1]) < int(m[2]) <= 65535:
            raise ValueError("not a port range like 10000-10099 (1024..65535)")
        return v
