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

from .settings import DIAL_ROOM_PREFIX, TokenSettings

MAX_BODY_BYTES = 8192
JSON_WHITESPACE = b" \t\r\n"
AGENT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
IDENTITY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
# Printable text: no C0/C1 control characters (they break logs and UIs).
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
# The only track a browser caller may publish; data (chat, text streams) rides the data channel.
PUBLISH_SOURCES = ["microphone"]
# Room and identity suffixes: 64 random bits, never guessed, never repeated in practice.
ROOM_SUFFIX_BYTES = 8
IDENTITY_SUFFIX_BYTES = 4
# A requested identity is kept (as the display name, and as the start of the identity);
# the random suffix makes it unique, so nobody can knock another caller out by reusing it.
IDENTITY_KEEP = 64 - 1 - 2 * IDENTITY_SUFFIX_BYTES


class InvalidRequest(ValueError):
    """The client's request cannot be served; the message is safe to return to it."""


class TokenRequest(BaseModel):
    """Body of `POST /api/token`. Every field is optional; unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)

    room: str | None = Field(
        None, min_length=1, max_length=64,
        description="Room to join: only where the server allows client-named rooms "
        "(PARLEY_TOKEN_CLIENT_ROOMS), inside its room prefix. Default: a new random room.",
    )
    identity: str | None = Field(
        None, min_length=1, max_length=64, pattern=f"^{IDENTITY_PATTERN}$",
        description="Requested identity: kept as the display name (unless `name` is given) and "
        "made unique with a random suffix. Default: random.",
    )
    name: str | None = Field(
        None, min_length=1, max_length=128, pattern=NAME_PATTERN,
        description="Display name. Default: the requested identity.",
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
class Grant:
    """What a valid request will get: decided before any call is counted or token signed."""

    room: str
    identity: str
    name: str
    agent: str
    metadata: str


@dataclass(frozen=True)
class Minter:
    """Mints tokens under one configuration; safe to share across requests."""

    api_key: str
    api_secret: str
    server_url: str
    default_agent: str
    allowed_agents: frozenset[str]
    room_prefix: str
    client_rooms: bool
    room_pattern: re.Pattern[str]
    reserved_prefixes: tuple[str, ...]
    ttl: timedelta

    @classmethod
    def from_settings(cls, s: TokenSettings) -> Minter:
        return cls(
            api_key=s.livekit_api_key,
            api_secret=s.secret,
            server_url=s.public_url,
            default_agent=s.agent_name,
            allowed_agents=s.allowed_agents,
            room_prefix=s.room_prefix,
            client_rooms=s.client_rooms,
            room_pattern=re.compile(s.room_pattern),
            reserved_prefixes=(s.sip_room_prefix, DIAL_ROOM_PREFIX),
            ttl=timedelta(seconds=s.ttl_s),
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
        if req.room is not None:
            self._check_room(req.room)
        if req.agent is not None and not self._agent_allowed(req.agent):
            raise InvalidRequest(
                f"agent {req.agent!r} is not allowed (allowed: {', '.join(sorted(self.allowed_agents))})"
            )
        return req

    def _check_room(self, room: str) -> None:
        # Order matters for the message only; every rule must hold.
        if not self.client_rooms:
            raise InvalidRequest(
                "room: this server picks the room (client-named rooms are off: PARLEY_TOKEN_CLIENT_ROOMS); "
                "leave the field out"
            )
        if any(room.startswith(p) for p in self.reserved_prefixes):
            raise InvalidRequest(f"room {room!r} is not allowed: it is in a telephony room namespace")
        if not room.startswith(self.room_prefix):
            raise InvalidRequest(f"room {room!r} is not allowed: names must start with {self.room_prefix!r}")
        if not self.room_pattern.fullmatch(room):
            raise InvalidRequest(f"room {room!r} is not allowed: names must match {self.room_pattern.pattern}")

    def _agent_allowed(self, agent: str) -> bool:
        if agent in self.allowed_agents:
            return True
        # "*" lets clients name any agent, still only with a plain, log-safe name.
        return "*" in self.allowed_agents and re.fullmatch(AGENT_PATTERN, agent) is not None

    def plan(self, req: TokenRequest) -> Grant:
        """Room, identity and name for a valid request: the server's choice unless allowed."""
        room = req.room or f"{self.room_prefix}{secrets.token_hex(ROOM_SUFFIX_BYTES)}"
        suffix = secrets.token_hex(IDENTITY_SUFFIX_BYTES)
        identity = f"{req.identity[:IDENTITY_KEEP]}-{suffix}" if req.identity else f"web-{suffix}"
        return Grant(room=room, identity=identity, name=req.name or req.identity or "",
                     agent=req.agent or self.default_agent, metadata=req.metadata or "")

    def room_config(self, grant: Grant, room_metadata: str = "") -> api.RoomConfiguration:
        """What a room created by this token's join looks like: the agent dispatched, and
        (when calls are counted) the tag naming the client, so LiveKit's room list counts it."""
        return api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=grant.agent)],
                                     metadata=room_metadata)

    def mint(self, grant: Grant, room_metadata: str = "") -> TokenResponse:
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(grant.identity)
            .with_ttl(self.ttl)
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=grant.room,
                    can_subscribe=True,
                    can_publish=True,
                    can_publish_sources=PUBLISH_SOURCES,
                    can_publish_data=True,
                    can_update_own_metadata=False,
                )
            )
            .with_room_config(self.room_config(grant, room_metadata))
        )
        if grant.name:
            token = token.with_name(grant.name)
        if grant.metadata:
            token = token.with_metadata(grant.metadata)
        jwt_str = token.to_jwt()
        # Report the expiry the token itself carries, not a second clock reading.
        exp = jwt.decode(jwt_str, options={"verify_signature": False})["exp"]
        expires_at = datetime.fromtimestamp(exp, UTC).isoformat().replace("+00:00", "Z")
        return TokenResponse(server_url=self.server_url, room=grant.room, identity=grant.identity,
                             token=jwt_str, expires_at=expires_at)


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
