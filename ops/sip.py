"""`parley-sip`: provision LiveKit SIP for Parley through livekit-api's SIP service.

`parley-sip setup` is idempotent: it creates or updates, by name,
- the inbound trunk `parley-inbound` (PARLEY_SIP_NUMBER, allowed addresses, optional
  digest auth),
- the dispatch rule `parley-dispatch`: every caller gets a new room `<prefix><random>`
  with the Parley agent dispatched into it by name,
- the outbound trunk `parley-outbound` (PARLEY_SIP_OUTBOUND_ADDRESS) that `parley-dial` uses,
- `parley-reject`, a catch-all inbound trunk for every other number. The open-source
  LiveKit server silently drops calls no dispatch rule matches (the caller hears
  ringing forever); this trunk instead answers them with a digest challenge (407) no
  caller can meet (the credentials derive from the API secret and are never shown), a
  clean final rejection before any room exists.
Running it twice changes nothing; changed settings update the objects in place.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field

import aiohttp
from livekit import api

from .settings import OpsSettings as Settings
from .settings import SettingsError

INBOUND_TRUNK = "parley-inbound"
OUTBOUND_TRUNK = "parley-outbound"
REJECT_TRUNK = "parley-reject"
DISPATCH_RULE = "parley-dispatch"
# Marks the objects this tool owns, so `teardown` never deletes anyone else's.
OWNER_METADATA = "parley"


class SetupError(RuntimeError):
    """Provisioning failed (message is a one-line reason)."""


@dataclass(frozen=True)
class SipOptions:
    number: str
    allowed_addresses: tuple[str, ...]
    auth_username: str
    auth_password: str
    agent_name: str
    room_prefix: str
    outbound_address: str
    outbound_number: str
    reject_secret: str  # keys the catch-all trunk's unguessable credentials

    @classmethod
    def from_settings(cls, s: Settings) -> SipOptions:
        return cls(
            number=s.sip_number,
            allowed_addresses=s.sip_allowed_addresses,
            auth_username=s.sip_auth_username,
            auth_password=s.sip_auth_password.get_secret_value(),
            agent_name=s.agent_name,
            room_prefix=s.sip_room_prefix,
            outbound_address=s.sip_outbound_address,
            outbound_number=s.sip_outbound_number or s.sip_number,
            reject_secret=s.secret,
        )


@dataclass
class SetupResult:
    inbound_trunk_id: str = ""
    outbound_trunk_id: str = ""
    dispatch_rule_id: str = ""
    actions: dict[str, str] = field(default_factory=dict)  # object name -> created|updated|unchanged


def inbound_trunk(o: SipOptions) -> api.SIPInboundTrunkInfo:
    return api.SIPInboundTrunkInfo(
        name=INBOUND_TRUNK,
        metadata=OWNER_METADATA,
        numbers=[o.number],
        allowed_addresses=list(o.allowed_addresses),
        auth_username=o.auth_username,
        auth_password=o.auth_password,
    )


def reject_trunk(o: SipOptions) -> api.SIPInboundTrunkInfo:
    password = hmac.new(o.reject_secret.encode(), b"parley-reject-trunk", hashlib.sha256).hexdigest()
    return api.SIPInboundTrunkInfo(
        name=REJECT_TRUNK, metadata=OWNER_METADATA, auth_username="parley-reject", auth_password=password,
    )


def outbound_trunk(o: SipOptions) -> api.SIPOutboundTrunkInfo:
    return api.SIPOutboundTrunkInfo(
        name=OUTBOUND_TRUNK,
        metadata=OWNER_METADATA,
        address=o.outbound_address,
        transport=api.SIPTransport.SIP_TRANSPORT_UDP,
        numbers=[o.outbound_number],
    )


def dispatch_rule(o: SipOptions, trunk_id: str) -> api.SIPDispatchRuleInfo:
    return api.SIPDispatchRuleInfo(
        name=DISPATCH_RULE,
        metadata=OWNER_METADATA,
        trunk_ids=[trunk_id],
        rule=api.SIPDispatchRule(
            dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=o.room_prefix)
        ),
        room_config=api.RoomConfiguration(
            # The room ends soon after the caller hangs up, even if nothing deletes it.
            empty_timeout=30,
            departure_timeout=5,
            agents=[api.RoomAgentDispatch(agent_name=o.agent_name, metadata=json.dumps({"phone": True}))],
        ),
    )


_VOLATILE = ("sip_trunk_id", "sip_dispatch_rule_id", "created_at", "updated_at")


def _same(a: object, b: object) -> bool:
    """Equal apart from ids and timestamps the server fills in."""
    ca, cb = type(a)(), type(b)()  # type: ignore[call-arg]
    ca.CopyFrom(a)  # type: ignore[attr-defined]
    cb.CopyFrom(b)  # type: ignore[attr-defined]
    for m in (ca, cb):
        for f in _VOLATILE:
            if f in m.DESCRIPTOR.fields_by_name:  # type: ignore[attr-defined]
                m.ClearField(f)  # type: ignore[attr-defined]
        # The server echoes some unset sub-messages back as empty ones (`media {}`).
        for fd, value in m.ListFields():  # type: ignore[attr-defined]
            if fd.message_type is not None and not fd.is_repeated and value.ByteSize() == 0:
                m.ClearField(fd.name)  # type: ignore[attr-defined]
    return ca == cb


async def _upsert_inbound(lkapi: api.LiveKitAPI, want: api.SIPInboundTrunkInfo, res: SetupResult) -> str:
    have = [t for t in (await lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
            if t.name == want.name]
    if not have:
        res.actions[want.name] = "created"
        return (await lkapi.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=want))).sip_trunk_id
    trunk_id = have[0].sip_trunk_id
    if _same(have[0], want):
        res.actions[want.name] = "unchanged"
    else:
        await lkapi.sip.update_inbound_trunk(trunk_id, want)
        res.actions[want.name] = "updated"
    for dup in have[1:]:  # left by an interrupted earlier run
        await lkapi.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=dup.sip_trunk_id))
    return trunk_id


async def setup(lkapi: api.LiveKitAPI, o: SipOptions) -> SetupResult:
    res = SetupResult()
    res.inbound_trunk_id = await _upsert_inbound(lkapi, inbound_trunk(o), res)
    try:
        await _upsert_inbound(lkapi, reject_trunk(o), res)
    except api.TwirpError as e:
        if "onflict" not in e.message:
            raise
        # Someone else's catch-all trunk owns unknown numbers; leave it be.
        res.actions[REJECT_TRUNK] = "skipped: another catch-all inbound trunk exists"

    want_rule = dispatch_rule(o, res.inbound_trunk_id)
    have_rules = [r for r in (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
                  if r.name == DISPATCH_RULE]
    if not have_rules:
        res.dispatch_rule_id = (await lkapi.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(dispatch_rule=want_rule))).sip_dispatch_rule_id
        res.actions[DISPATCH_RULE] = "created"
    else:
        res.dispatch_rule_id = have_rules[0].sip_dispatch_rule_id
        if _same(have_rules[0], want_rule):
            res.actions[DISPATCH_RULE] = "unchanged"
        else:
            await lkapi.sip.update_dispatch_rule(res.dispatch_rule_id, want_rule)
            res.actions[DISPATCH_RULE] = "updated"
        for dup in have_rules[1:]:
            await lkapi.sip.delete_dispatch_rule(
                api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=dup.sip_dispatch_rule_id))

    want_out = outbound_trunk(o)
    have_out = [t for t in (await lkapi.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
                if t.name == OUTBOUND_TRUNK]
    if not have_out:
        res.outbound_trunk_id = (await lkapi.sip.create_outbound_trunk(
            api.CreateSIPOutboundTrunkRequest(trunk=want_out))).sip_trunk_id
        res.actions[OUTBOUND_TRUNK] = "created"
    else:
        res.outbound_trunk_id = have_out[0].sip_trunk_id
        if _same(have_out[0], want_out):
            res.actions[OUTBOUND_TRUNK] = "unchanged"
        else:
            await lkapi.sip.update_outbound_trunk(res.outbound_trunk_id, want_out)
            res.actions[OUTBOUND_TRUNK] = "updated"
        for dup in have_out[1:]:
            await lkapi.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=dup.sip_trunk_id))
    return res


async def find_outbound_trunk(lkapi: api.LiveKitAPI) -> str | None:
    items = (await lkapi.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
    return next((t.sip_trunk_id for t in items if t.name == OUTBOUND_TRUNK), None)


async def teardown(lkapi: api.LiveKitAPI) -> list[str]:
    """Delete the objects `setup` made (by name and owner mark); returns their names."""
    gone: list[str] = []
    for r in (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items:
        if r.name == DISPATCH_RULE and r.metadata == OWNER_METADATA:
            await lkapi.sip.delete_dispatch_rule(
                api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=r.sip_dispatch_rule_id))
            gone.append(f"{r.name} {r.sip_dispatch_rule_id}")
    trunks = [*(await lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items,
              *(await lkapi.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items]
    for t in trunks:
        if t.name in (INBOUND_TRUNK, REJECT_TRUNK, OUTBOUND_TRUNK) and t.metadata == OWNER_METADATA:
            await lkapi.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=t.sip_trunk_id))
            gone.append(f"{t.name} {t.sip_trunk_id}")
    return gone


API_TIMEOUT_S = 20.0
# What talking to a LiveKit server can fail with (anything else is a bug and propagates).
API_ERRORS = (api.TwirpError, asyncio.TimeoutError, aiohttp.ClientError, OSError)


def connection_overrides(args: argparse.Namespace) -> dict[str, str]:
    """--url/--api-key/--api-secret, where given, win over the environment."""
    given = {"livekit_url": args.url, "livekit_api_key": args.api_key, "livekit_api_secret": args.api_secret}
    return {k: v for k, v in given.items() if v}


def quiet_dev_key_warning(settings: Settings) -> None:
    """PyJWT warns on every token signed with the dev secret ("secret"); once is enough (README)."""
    if settings.secret == "secret":
        warnings.filterwarnings("ignore", message="The HMAC key is")


def http_url(url: str) -> str:
    return url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


def api_error(e: BaseException, url: str) -> str:
    """One line for any failure talking to the LiveKit API."""
    if isinstance(e, api.TwirpError):
        if e.status in (401, 403):
            return f"LiveKit rejected the API key/secret ({e.message})"
        return f"LiveKit API error {e.status}: {e.message}"
    if isinstance(e, asyncio.TimeoutError):
        return f"LiveKit server at {url} did not answer"
    return f"cannot reach LiveKit server at {url}: {e.__class__.__name__}: {e}"


async def run_setup(settings: Settings, *, quiet: bool = True) -> SetupResult:
    quiet_dev_key_warning(settings)
    lkapi = api.LiveKitAPI(http_url(settings.livekit_url), settings.livekit_api_key, settings.secret)
    try:
        res = await asyncio.wait_for(setup(lkapi, SipOptions.from_settings(settings)), API_TIMEOUT_S)
    except API_ERRORS as e:
        raise SetupError(api_error(e, settings.livekit_url)) from None
    finally:
        await lkapi.aclose()
    if not quiet:
        for name, action in res.actions.items():
            print(f"    {name}: {action}")
        print(f"    inbound number {settings.sip_number} -> rooms '{settings.sip_room_prefix}*' "
              f"with agent '{settings.agent_name}'; outbound via {settings.sip_outbound_address}")
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="parley-sip", description="Provision LiveKit SIP for Parley.")
    p.add_argument("action", choices=("setup", "status", "teardown"),
                   help="setup: create/update trunks and dispatch rule (idempotent); "
                        "status: list them; teardown: delete them")
    p.add_argument("--url", help="LiveKit server URL (default: LIVEKIT_URL)")
    p.add_argument("--api-key", help="LiveKit API key (default: LIVEKIT_API_KEY)")
    p.add_argument("--api-secret", help="LiveKit API secret (default: LIVEKIT_API_SECRET)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args(argv)
    try:
        settings = Settings.load(**connection_overrides(args))
    except SettingsError as e:
        print(f"parley-sip: configuration error: {e}", file=sys.stderr)
        return 2

    quiet_dev_key_warning(settings)

    async def run() -> dict[str, object]:
        if args.action == "setup":
            return asdict(await run_setup(settings, quiet=args.json))
        lkapi = api.LiveKitAPI(http_url(settings.livekit_url), settings.livekit_api_key, settings.secret)
        try:
            if args.action == "teardown":
                return {"deleted": await asyncio.wait_for(teardown(lkapi), 20)}
            ins = (await asyncio.wait_for(lkapi.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest()), 20)).items
            outs = (await lkapi.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
            rules = (await lkapi.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        except API_ERRORS as e:
            raise SetupError(api_error(e, settings.livekit_url)) from None
        finally:
            await lkapi.aclose()
        return {
            "inbound_trunks": [{"id": t.sip_trunk_id, "name": t.name, "numbers": list(t.numbers),
                                "allowed_addresses": list(t.allowed_addresses),
                                "auth": bool(t.auth_username)} for t in ins],
            "outbound_trunks": [{"id": t.sip_trunk_id, "name": t.name, "address": t.address,
                                 "numbers": list(t.numbers)} for t in outs],
            "dispatch_rules": [{"id": r.sip_dispatch_rule_id, "name": r.name, "trunk_ids": list(r.trunk_ids),
                                "agents": [a.agent_name for a in r.room_config.agents]} for r in rules],
        }

    try:
        out = asyncio.run(run())
    except SetupError as e:
        print(f"parley-sip: {e}", file=sys.stderr)
        return 1
    if args.json or args.action != "setup":
        print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
