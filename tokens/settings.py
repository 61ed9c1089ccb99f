"""The token service's settings (`parley-tokens`), and nothing else's.

pydantic-settings: values come from the environment, then from `.env` in the working
directory (real environment variables win); an empty value means "the default". Every
problem is a `SettingsError` whose message is one line naming the variable; secrets
(`SecretStr`) never appear in a repr, a log line or an error message.

This module must not import the worker (`agent`): the token image does not ship it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_ROOM_PATTERN", "SettingsError", "TokenSettings", "is_loopback"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Room names a browser may ask for (when allowed at all): short, URL- and log-safe.
DEFAULT_ROOM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
PREFIX_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
# Room namespaces that belong to telephony: LiveKit SIP's dispatch rule creates
# <PARLEY_SIP_ROOM_PREFIX><caller>… for inbound calls, parley-dial dial-<number>-… for
# outbound ones. A browser token must never name one of those rooms.
DIAL_ROOM_PREFIX = "dial-"
# LiveKit's development credentials (`livekit-server --dev`).
DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
MIN_KEY_BYTES = 32
SECRET_VARS = frozenset({"LIVEKIT_API_SECRET", "PARLEY_TOKEN_API_KEY"})


class SettingsError(ValueError):
    """A configuration value is missing or invalid (the message names the variable)."""


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _overlaps(a: str, b: str) -> bool:
    return a.startswith(b) or b.startswith(a)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class TokenSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_ignore_empty=True, extra="ignore", frozen=True, populate_by_name=True,
        str_strip_whitespace=True, hide_input_in_errors=True,
    )

    # The LiveKit server tokens are signed for (and whose room list counts calls).
    livekit_url: str = Field("ws://127.0.0.1:7880", alias="LIVEKIT_URL")
    livekit_api_key: str = Field(DEV_API_KEY, alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(SecretStr(DEV_API_SECRET), alias="LIVEKIT_API_SECRET")
    # The LiveKit URL handed to clients (e.g. wss://lk.example.com behind TLS); default LIVEKIT_URL.
    livekit_public_url: str = Field("", alias="PARLEY_LIVEKIT_PUBLIC_URL")
    agent_name: str = Field("parley", alias="PARLEY_AGENT_NAME")
    # "production" applies the production checks even on a loopback address.
    env: Literal["development", "production"] = Field("development", alias="PARLEY_ENV")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", alias="PARLEY_LOG_LEVEL")

    api_key: SecretStr = Field(SecretStr(""), alias="PARLEY_TOKEN_API_KEY")  # empty: dev mode
    ttl_s: int = Field(900, ge=60, alias="PARLEY_TOKEN_TTL")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field((), alias="PARLEY_TOKEN_CORS_ORIGINS")
    rate_limit: int = Field(30, ge=0, alias="PARLEY_TOKEN_RATE_LIMIT")  # per client per minute; 0 = off
    # Rooms: the server picks <prefix><random>; clients may name one only when allowed,
    # only inside the prefix, only matching the pattern, never in a telephony namespace.
    room_prefix: str = Field("web-", alias="PARLEY_TOKEN_ROOM_PREFIX")
    client_rooms: bool = Field(False, alias="PARLEY_TOKEN_CLIENT_ROOMS")
    room_pattern: str = Field(DEFAULT_ROOM_PATTERN, alias="PARLEY_TOKEN_ROOM_PATTERN")
    sip_room_prefix: str = Field("call-", alias="PARLEY_SIP_ROOM_PREFIX")
    agents: Annotated[tuple[str, ...], NoDecode] = Field((), alias="PARLEY_TOKEN_AGENTS")
    # Concurrent calls (LiveKit rooms in the prefix): per client address (/64 for IPv6)
    # and in all; 0 = no limit. With both 0 the service never calls LiveKit's API.
    max_calls_per_client: int = Field(3, ge=0, alias="PARLEY_TOKEN_MAX_CALLS_PER_CLIENT")
    max_calls: int = Field(100, ge=0, alias="PARLEY_TOKEN_MAX_CALLS")
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field((), alias="PARLEY_TOKEN_TRUSTED_PROXIES")
    static_dir: str = Field("", alias="PARLEY_TOKEN_STATIC_DIR")
    metrics_port: int = Field(9101, ge=0, le=65535, alias="PARLEY_TOKEN_METRICS_PORT")  # 0 = off

    @classmethod
    def load(cls, **overrides: Any) -> TokenSettings:
        try:
            return cls(**overrides)
        except ValidationError as e:
            raise SettingsError(one_line(e)) from None

    # --- parsing ---------------------------------------------------------------------

    @field_validator("env", "log_level", mode="before")
    @classmethod
    def _case(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("cors_origins", "agents", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        items = _comma_list(value)
        if not isinstance(items, tuple):
            return items
        out: list[IPNetwork] = []
        for item in items:
            if item == "*":
                # Anyone who can reach the port could then claim any address, and walk past
                # the rate limit and the per-client call cap.
                raise ValueError("'*' is refused: name the proxies' addresses or CIDR ranges "
                                 "(e.g. the ingress controller's pod range 10.0.0.0/8)")
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR range") from None
            if net.prefixlen == 0:
                raise ValueError(f"{item!r} trusts every address, like '*': name the proxies' range")
            out.append(net)
        return tuple(out)

    @field_validator("room_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"is not a valid regular expression: {e}") from None
        return value

    @field_validator("room_prefix", "sip_room_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(PREFIX_PATTERN, value):
            raise ValueError(f"must match {PREFIX_PATTERN} (a short, URL- and log-safe prefix)")
        return value

    @field_validator("livekit_url", "livekit_public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^(wss?|https?)://[^/\s]+", value):
            raise ValueError("is not a ws(s):// or http(s):// URL")
        return value

    @model_validator(mode="after")
    def _namespaces(self) -> TokenSettings:
        for other, var in ((self.sip_room_prefix, "PARLEY_SIP_ROOM_PREFIX"), (DIAL_ROOM_PREFIX, "parley-dial")):
            if _overlaps(self.room_prefix, other):
                raise SettingsError(
                    f"PARLEY_TOKEN_ROOM_PREFIX={self.room_prefix!r} overlaps the telephony rooms "
                    f"{other!r}… ({var}): browser rooms need a namespace of their own")
        return self

    # --- derived ---------------------------------------------------------------------

    @property
    def secret(self) -> str:
        return self.livekit_api_secret.get_secret_value()

    @property
    def bearer_key(self) -> str:
        return self.api_key.get_secret_value()

    @property
    def dev_mode(self) -> bool:
        return not self.bearer_key

    @property
    def public_url(self) -> str:
        return self.livekit_public_url or self.livekit_url

    @property
    def allowed_agents(self) -> frozenset[str]:
        return frozenset(self.agents or (self.agent_name,))

    @property
    def counts_calls(self) -> bool:
        return self.max_calls_per_client > 0 or self.max_calls > 0

    def is_production(self, host: str) -> bool:
        return self.env == "production" or not is_loopback(host)

    def check_production(self, host: str) -> None:
        """Production (a non-loopback bind, or PARLEY_ENV=production) refuses development
        credentials and short keys: each is one line naming the variable."""
        if not self.is_production(host):
            return
        why = (f"--host {host} is not a loopback address" if not is_loopback(host)
               else "PARLEY_ENV=production")
        if self.dev_mode:
            raise SettingsError(
                f"PARLEY_TOKEN_API_KEY is empty (dev mode), which is for loopback only; refusing to "
                f"listen on {host}. Set a key, or use --host 127.0.0.1." if not is_loopback(host) else
                f"PARLEY_TOKEN_API_KEY is empty (dev mode), refused in production ({why})")
        if self.livekit_api_key == DEV_API_KEY:
            raise SettingsError(f"LIVEKIT_API_KEY is LiveKit's development key {DEV_API_KEY!r}, refused in "
                                f"production ({why})")
        if self.secret == DEV_API_SECRET:
            raise SettingsError(f"LIVEKIT_API_SECRET is LiveKit's development secret, refused in production ({why})")
        for var, value in (("LIVEKIT_API_SECRET", self.secret), ("PARLEY_TOKEN_API_KEY", self.bearer_key)):
            size = len(value.encode())
            if size < MIN_KEY_BYTES:
                raise SettingsError(f"{var} is {size} bytes, shorter than the {MIN_KEY_BYTES} bytes required "
                                    f"in production ({why})")

    def livekit_http_url(self) -> str:
        """LIVEKIT_URL for the server API (Twirp over HTTP): ws -> http, wss -> https."""
        parts = urlsplit(self.livekit_url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}"

    def masked(self) -> dict[str, str]:
        """Effective configuration for logs: secrets show only their length."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                secret = value.get_secret_value()
                value = f"***({len(secret)} chars)" if secret else ""
            elif isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            out[name] = str(value)
        return out


def one_line(e: ValidationError) -> str:
    """The first problem as `VARIABLE=value: reason` (never the value of a secret)."""
    err = e.errors(include_url=False)[0]
    var = str(err["loc"][0]) if err["loc"] else ""
    msg = str(err["msg"]).removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "literal_error":
        msg = "is not one of: " + ", ".join(
            str(x).strip("'") for x in re.findall(r"'[^']*'", str(ctx.get("expected", ""))))
    elif kind in ("greater_than_equal", "less_than_equal"):
        msg = f"must be {'>=' if kind == 'greater_than_equal' else '<='} {ctx.get('ge', ctx.get('le'))}"
    elif kind == "int_parsing":
        msg = "is not an integer"
    elif kind == "bool_parsing":
        msg = "is not a boolean (use 1 or 0)"
    if not var:  # a model-level check: its message names the variable(s) itself
        return msg
    value = err.get("input")
    if var in SECRET_VARS or value is None or isinstance(value, dict):
        return f"{var}: {msg}"
    shown = value if isinstance(value, str) else str(value)
    return f"{var}={shown[:80]!r}: {msg}"
