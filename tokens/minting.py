"""What a client may ask for, and the narrowly scoped LiveKit token it gets.

The request is validated here, not by the framework, so every rejection is one
plain sentence (`InvalidRequest`) and nothing a client sends can raise anything else.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from livekit import api
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.settings import Settings

MAX_BODY_BYTES = 8192
JSON_WHITESPACE = b" \t\r\n"
AGENT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
IDENTITY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
# Printable text: no C0/C1 control characters (they break logs and UIs).
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
# The only track a browser caller may publish; data (chat, text streams) rides the data channel.
PUBLISH_SOURCES = ["microphone"]


class InvalidRequest(ValueError):
    """The client's request cannot be served; the message is safe to return to it."""


class TokenRequest(BaseModel):
    """Body of `POST /api/token`. Every field is optional; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)

    room: str | None = Field(
        None, min_length=1, max_length=64,
        description="Room to join (must match the server's allowed room pattern). Default: a new random room.",
    )
    identity: str | None = Field(
        None, min_length=1, max_length=64, pattern=f"^{IDENTITY_PATTERN}$",
        description="Participant identity. Default: random.",
    )
    name: str | None = Field(
        None, min_length=1, max_length=128, pattern=NAME_PATTERN, description="Display name."
    )
    agent: str | None = Field(
        None, min_length=1, max_length=64,
        description="Agent to dispatch into the room (must be one the server allows). Default: the server's agent.",
    )
    metadata: str | None = Field(
        None, max_length=1024, description="Participant metadata (opaque string, e.g. JSON)."
    )


class TokenResponse(BaseModel):
    server_url: str = Field(description="LiveKit URL to connect to with the token.")
    room: str
    identity: str
    token: str = Field(description="LiveKit access token (JWT).")
    expires_at: str = Field(description="Token expiry, ISO-8601 UTC.")


class ErrorResponse(BaseModel):
    error: str


@dataclass(frozen=True)
class Minter:
    """Mints tokens under one configuration; safe to share across requests."""

    api_key: str
    api_secret: str
    server_url: str
    default_agent: str
    allowed_agents: frozenset[str]
    room_pattern: re.Pattern[str]
    ttl: timedelta

    @classmethod
    def from_settings(cls, s: Settings) -> Minter:
        return cls(
            api_key=s.livekit_api_key,
            api_secret=s.livekit_api_secret,
            server_url=s.livekit_public_url or s.livekit_url,
            default_agent=s.agent_name,
            allowed_agents=frozenset(s.token_agents or (s.agent_name,)),
            room_pattern=re.compile(s.token_room_pattern),
            ttl=timedelta(seconds=s.token_ttl_s),
        )

    def parse(self, body: bytes) -> TokenRequest:
        """Bytes from the wire -> a request this server will serve, or InvalidRequest."""
        if len(body) > MAX_BODY_BYTES:
            raise InvalidRequest(f"request body too large (max {MAX_BODY_BYTES} bytes)")
        if not body.strip(JSON_WHITESPACE):  # no body: every field takes its default
            return TokenRequest()
        try:
            text = body.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259), nothing else
        except UnicodeDecodeError:
            raise InvalidRequest("request body is not UTF-8 text") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise InvalidRequest("request body is not valid JSON") from None
        except RecursionError:
            raise InvalidRequest("request body is nested too deeply") from None
        if data is None:
            return TokenRequest()
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        # JSON nulls mean "not given", like a missing field.
        data = {k: v for k, v in data.items() if v is not None}
        for key, value in data.items():
            if isinstance(value, str) and not _is_utf8(value):
                where = key if key in TokenRequest.model_fields else _field(key)
                raise InvalidRequest(f"{where}: must be valid Unicode text")
        try:
            req = TokenRequest.model_validate(data)
        except ValidationError as e:
            raise InvalidRequest(_describe(e)) from None
        if req.room is not None and not self.room_pattern.fullmatch(req.room):
            raise InvalidRequest(
                f"room {req.room!r} is not allowed: names must match {self.room_pattern.pattern}"
            )
        if req.agent is not None and not self._agent_allowed(req.agent):
            raise InvalidRequest(
                f"agent {req.agent!r} is not allowed (allowed: {', '.join(sorted(self.allowed_agents))})"
            )
        return req

    def _agent_allowed(self, agent: str) -> bool:
        if agent in self.allowed_agents:
            return True
        # "*" lets clients name any agent, still only with a plain, log-safe name.
        return "*" in self.allowed_agents and re.fullmatch(AGENT_PATTERN, agent) is not None

    def mint(self, req: TokenRequest) -> TokenResponse:
        room = req.room or f"parley-{secrets.token_hex(6)}"
        identity = req.identity or f"web-{secrets.token_hex(6)}"
        agent = req.agent or self.default_agent
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_ttl(self.ttl)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=room,
                    can_subscribe=True,
                    can_publish=True,
                    can_publish_sources=PUBLISH_SOURCES,
                    can_publish_data=True,
                    can_update_own_metadata=False,
                )
            )
            .with_room_config(
                api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent)])
            )
        )
        if req.name:
            token = token.with_name(req.name)
        if req.metadata:
            token = token.with_metadata(req.metadata)
        jwt_str = token.to_jwt()
        # Report the expiry the token itself carries, not a second clock reading.
        exp = jwt.decode(jwt_str, options={"verify_signature": False})["exp"]
        expires_at = datetime.fromtimestamp(exp, UTC).isoformat().replace("+00:00", "Z")
        return TokenResponse(
            server_url=self.server_url, room=room, identity=identity, token=jwt_str, expires_at=expires_at
        )


def _is_utf8(s: str) -> bool:
    # json.loads lets lone surrogates ("\ud800") through; they cannot be encoded anywhere.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(name: Any) -> str:
    text = str(name)
    text = text if _is_utf8(text) else text.encode("utf-8", "backslashreplace").decode()
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def _describe(e: ValidationError) -> str:
    """First validation problem as one line, never echoing the (possibly huge) input."""
    err = e.errors(include_input=False, include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown field {_field(loc)} (allowed: {', '.join(TokenRequest.model_fields)})"
    ctx = err.get("ctx") or {}
    if kind == "string_type":
        return f"{loc}: must be a string"
    if kind == "string_too_long":
        return f"{loc}: too long (max {ctx.get('max_length')} characters)"
    if kind == "string_too_short":
        return f"{loc}: must not be empty"
    if kind == "string_pattern_mismatch":
        if loc == "identity":
            return f"identity: must match {IDENTITY_PATTERN}"
        return f"{loc}: contains characters that are not allowed (control characters)"
    return f"{loc}: {err['msg']}"
