"""`parley-dial <number>`: the agent calls a phone number through LiveKit SIP.

Creates a room, dispatches the Parley agent into it by name, then dials the number
through the outbound trunk (`CreateSIPParticipant`, waiting until answered). The agent
joins while the phone rings and speaks first the moment the callee picks up
(agent/telephony.py waits for `sip.callStatus=active`). The call then runs in the
worker; this command returns once it is answered (or has failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from livekit import api

from .settings import OpsSettings as Settings
from .settings import SettingsError
from .sip import (
    API_ERRORS,
    api_error,
    connection_overrides,
    find_outbound_trunk,
    http_url,
    quiet_dev_key_warning,
)

# E.164-ish: what a SIP trunk puts in the request URI's user part.
_NUMBER = re.compile(r"\+?[0-9]{3,20}")


class DialError(RuntimeError):
    """The call could not be placed (message is a one-line reason)."""


@dataclass(frozen=True)
class DialOptions:
    number: str
    agent: str
    room: str
    trunk_id: str
    ring_timeout_s: int
    identity: str


@dataclass
class DialResult:
    room: str
    participant_identity: str
    sip_call_id: str
    answered_after_ms: float


async def dial(lkapi: api.LiveKitAPI, o: DialOptions) -> DialResult:
    trunk_id = o.trunk_id or await find_outbound_trunk(lkapi)
    if not trunk_id:
        raise DialError("no outbound trunk 'parley-outbound': run `parley-sip setup` (or `make sip-setup`)")
    await lkapi.room.create_room(api.CreateRoomRequest(name=o.room, empty_timeout=30, departure_timeout=5))
    # Dispatch first: the agent is in the room, models warm, while the phone rings.
    await lkapi.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name=o.agent, room=o.room,
                                       metadata=json.dumps({"phone": True, "dial": o.number}))
    )
    req = api.CreateSIPParticipantRequest(
        sip_trunk_id=trunk_id,
        sip_call_to=o.number,
        room_name=o.room,
        participant_identity=o.identity,
        participant_name=f"Phone {o.number}",
        wait_until_answered=True,
        play_dialtone=False,
    )
    req.ringing_timeout.seconds = o.ring_timeout_s
    t0 = time.perf_counter()
    try:
        info = await lkapi.sip.create_sip_participant(req)
    except BaseException:
        # Nothing left behind: the room (and the agent in it) goes with the failed call.
        try:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=o.room))
        except API_ERRORS:
            pass
        raise
    return DialResult(room=o.room, participant_identity=info.participant_identity,
                      sip_call_id=info.sip_call_id, answered_after_ms=round((time.perf_counter() - t0) * 1000, 1))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="parley-dial", description="Have the Parley agent call a phone number.")
    p.add_argument("number", help="number to call, e.g. +15550123 (sent to the outbound trunk's SIP peer)")
    p.add_argument("--url", help="LiveKit server URL (default: LIVEKIT_URL)")
    p.add_argument("--api-key", help="LiveKit API key (default: LIVEKIT_API_KEY)")
    p.add_argument("--api-secret", help="LiveKit API secret (default: LIVEKIT_API_SECRET)")
    p.add_argument("--agent", help="agent name to dispatch (default: PARLEY_AGENT_NAME or 'parley')")
    p.add_argument("--room", help="room name (default: dial-<number>-<random>)")
    p.add_argument("--trunk-id", default="", help="outbound trunk id (default: the 'parley-outbound' trunk)")
    p.add_argument("--ring-timeout", type=int, default=30, metavar="SECONDS",
                   help="how long to let the phone ring (default 30)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    number = args.number.strip()
    if not _NUMBER.fullmatch(number):
        print(f"parley-dial: {args.number!r} is not a phone number (digits, optionally with a leading +)",
              file=sys.stderr)
        return 2
    if not 1 <= args.ring_timeout <= 300:
        print("parley-dial: --ring-timeout must be between 1 and 300 seconds", file=sys.stderr)
        return 2
    try:
        settings = Settings.load(**connection_overrides(args))
    except SettingsError as e:
        print(f"parley-dial: configuration error: {e}", file=sys.stderr)
        return 2
    quiet_dev_key_warning(settings)
    digits = number.lstrip("+")
    opts = DialOptions(
        number=number, agent=args.agent or settings.agent_name,
        room=args.room or f"dial-{digits}-{secrets.token_hex(3)}", trunk_id=args.trunk_id,
        ring_timeout_s=args.ring_timeout, identity=f"phone-{digits}",
    )

    async def run() -> DialResult:
        lkapi = api.LiveKitAPI(http_url(settings.livekit_url), settings.livekit_api_key, settings.secret)
        try:
            return await dial(lkapi, opts)
        finally:
            await lkapi.aclose()

    out: dict[str, Any]
    try:
        res = asyncio.run(run())
    except api.SipCallError as e:
        out = {"event": "failed", "number": number, "room": opts.room, "sip_status_code": e.sip_status_code,
               "sip_status": e.sip_status or e.message}
        if args.json:
            print(json.dumps(out))
        print(f"parley-dial: {number} did not answer: SIP {e.sip_status_code or '?'} {e.sip_status or e.message}",
              file=sys.stderr)
        return 1
    except DialError as e:
        print(f"parley-dial: {e}", file=sys.stderr)
        return 1
    except API_ERRORS as e:
        print(f"parley-dial: {api_error(e, settings.livekit_url)}", file=sys.stderr)
        return 1
    out = {"event": "answered", "number": number, "room": res.room,
           "participant_identity": res.participant_identity, "sip_call_id": res.sip_call_id,
           "answered_after_ms": res.answered_after_ms}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{number} answered after {res.answered_after_ms / 1000:.1f}s: the agent is talking in room "
              f"{res.room} (SIP call {res.sip_call_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
