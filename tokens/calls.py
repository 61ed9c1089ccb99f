"""Caps on the calls a client (and everyone together) can start, counted from LiveKit's own
room list, so the count survives a restart of this service and is shared by its replicas.

Each token dispatches an agent that costs ~0.5 core. With a cap set, minting creates the
room up front (RoomService.CreateRoom, agent dispatch included) with metadata naming a
keyed hash of the client; counting is then ListRooms: every room in the service's prefix
is a call, and those whose tag is the client's are the client's calls. A room nobody joins
closes after JOIN_WINDOW_S (LiveKit's empty timeout); a finished call's room is deleted
by the worker, or closed by LiveKit once everyone has left.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass

import aiohttp
from livekit import api

from .settings import TokenSettings

log = logging.getLogger("parley.tokens")

# A token's room waits this long for its caller (and holds a slot of the cap meanwhile).
JOIN_WINDOW_S = 30
# After the last participant left: LiveKit closes the room (the worker usually deletes it first).
DEPARTURE_TIMEOUT_S = 20
# A call lasts minutes; asking again sooner than this is pointless.
CAP_RETRY_AFTER_S = 30
LIVEKIT_RETRY_AFTER_S = 5
LIVEKIT_TIMEOUT_S = 5.0
TAG_KEY = "parley_client"


class Refusal(Exception):
    """A request this service will not serve now; `reason` is bounded (a metric label)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Counts:
    client: int
    total: int


class CallLedger:
    """Admits a new call (and opens its room) or refuses it with a Refusal."""

    def __init__(self, s: TokenSettings) -> None:
        self.per_client = s.max_calls_per_client
        self.total = s.max_calls
        self.prefix = s.room_prefix
        self._url = s.livekit_http_url()
        self._key = s.livekit_api_key
        self._secret = s.secret
        # Keyed with the LiveKit secret: room metadata is visible to the room's participants,
        # and a bare hash of an IPv4 address is reversed in seconds. Same key on every
        # replica and after a restart, so the tags keep counting.
        self._tag_key = hashlib.sha256(b"parley-token-client\x00" + s.secret.encode()).digest()
        self._lk: api.LiveKitAPI | None = None
        # One admission at a time in this process: count and create must not interleave,
        # or two requests could both take the last slot.
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.per_client > 0 or self.total > 0

    def tag(self, client_key: str) -> str:
        return hmac.new(self._tag_key, client_key.encode(), hashlib.sha256).hexdigest()[:32]

    def metadata(self, client_key: str) -> str:
        return json.dumps({TAG_KEY: self.tag(client_key)}, separators=(",", ":"))

    async def aclose(self) -> None:
        if self._lk is not None:
            await self._lk.aclose()
            self._lk = None

    def _api(self) -> api.LiveKitAPI:
        if self._lk is None:  # inside the running loop: aiohttp binds its session to it
            self._lk = api.LiveKitAPI(self._url, self._key, self._secret, failover=False,
                                      timeout=aiohttp.ClientTimeout(total=LIVEKIT_TIMEOUT_S))
        return self._lk

    async def count(self, client_key: str) -> Counts:
        rooms = (await self._api().room.list_rooms(api.ListRoomsRequest())).rooms
        ours = [r for r in rooms if r.name.startswith(self.prefix)]
        tag = self.tag(client_key)
        return Counts(client=sum(1 for r in ours if _tag_of(r.metadata) == tag), total=len(ours))

    async def admit(self, client_key: str, room: str, agent: str) -> Counts:
        """Count, refuse over a cap, else create the room (with its agent) tagged for the client."""
        async with self._lock:
            try:
                counts = await self.count(client_key)
                if self.per_client and counts.client >= self.per_client:
                    raise Refusal(429, "client call cap",
                                  f"too many calls from this client ({counts.client} of "
                                  f"{self.per_client}); retry in {CAP_RETRY_AFTER_S} s", CAP_RETRY_AFTER_S)
                if self.total and counts.total >= self.total:
                    raise Refusal(503, "global call cap",
                                  f"all {self.total} call slots are taken; retry in {CAP_RETRY_AFTER_S} s",
                                  CAP_RETRY_AFTER_S)
                await self._api().room.create_room(api.CreateRoomRequest(
                    name=room, metadata=self.metadata(client_key), empty_timeout=JOIN_WINDOW_S,
                    departure_timeout=DEPARTURE_TIMEOUT_S, agents=[api.RoomAgentDispatch(agent_name=agent)]))
            except (TimeoutError, aiohttp.ClientError, api.TwirpError) as e:
                # Fail closed: without a count, a cap is no cap.
                log.warning("cannot count calls on LiveKit at %s: %s", self._url, _describe(e))
                raise Refusal(503, "livekit unavailable",
                              f"cannot count calls (the LiveKit server is not answering); retry in "
                              f"{LIVEKIT_RETRY_AFTER_S} s", LIVEKIT_RETRY_AFTER_S) from None
            return Counts(client=counts.client + 1, total=counts.total + 1)


def _tag_of(metadata: str) -> str | None:
    if not metadata.startswith("{"):
        return None
    try:
        data = json.loads(metadata)
    except ValueError:
        return None
    tag = data.get(TAG_KEY) if isinstance(data, dict) else None
    return tag if isinstance(tag, str) else None


def _describe(e: BaseException) -> str:
    if isinstance(e, api.TwirpError):
        return f"{e.code}: {e.message}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
