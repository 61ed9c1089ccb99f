"""What the agent does differently on a phone line (a LiveKit SIP participant).

LiveKit SIP turns a phone call into a room participant of kind SIP with `sip.*`
attributes (caller number, trunk, call status). For such a caller the worker:
- greets as a phone service (inbound) or as the caller (outbound, only once the
  callee has answered: `sip.callStatus` becomes `active`);
- on an outbound call, listens before speaking (answering-machine detection,
  agent/amd.py): a person gets the greeting and the conversation, a machine gets
  PARLEY_SIP_VOICEMAIL_MESSAGE after its beep, then the agent hangs up;
- hears keypad presses (RFC 2833 / SIP INFO, delivered by LiveKit as
  `sip_dtmf_received`) as `dtmf` events; the default keypad menu is deterministic
  (`#` hangs up, `0` transfers to PARLEY_SIP_TRANSFER_TO, other digits are
  acknowledged and noted in the conversation for the LLM);
- hangs up for real through `Call.end` (agent/callstate.py): deleting the room makes
  LiveKit SIP send BYE; when the caller hangs up first, the room is deleted at once and
  the session report written;
- adds a `transfer_call` tool for LLMs that can call tools (next to agent/tools.py's
  `end_call`, which ends a phone call like any other: the room goes, LiveKit SIP sends
  BYE). The default local model calls no tools, so the keypad and a spoken "goodbye"
  do the same deterministically.

8 kHz G.711 needs nothing here: LiveKit SIP decodes it and publishes 48 kHz Opus, and
RoomIO resamples to the 16 kHz the VAD and Whisper take (worker.py, AudioInputOptions).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from livekit import api, rtc
from livekit.agents import Agent, AgentSession, JobContext, RunContext, StopResponse, function_tool, llm

from . import amd
from .assistant import ParleyAgent
from .settings import Settings

if TYPE_CHECKING:
    from .callstate import Call

logger = logging.getLogger("parley.telephony")

ATTR_PHONE_NUMBER = "sip.phoneNumber"  # the far end: caller (inbound) or callee (outbound)
ATTR_TRUNK_NUMBER = "sip.trunkPhoneNumber"  # our number
ATTR_CALL_STATUS = "sip.callStatus"  # dialing | ringing | active | hangup | automation
ATTR_RULE_ID = "sip.ruleID"  # set only for calls that came in through a dispatch rule
ATTR_CALL_ID = "sip.callID"

HANGUP_DIGIT = "#"
TRANSFER_DIGIT = "0"
# A caller's whole turn that only says goodbye ends the call without asking the LLM: every
# word a farewell or thanks, at least one of them a farewell. Word by word, so repeats and
# any order count ("Goodbye! Goodbye! Thank you.", "Thanks, bye").
_FAREWELL = re.compile(r"\b(?:good ?bye|bye|hang up|that'?s all)\b")
_FAREWELL_WORDS = frozenset(
    "ok okay alright all right then good bye goodbye thanks thank you very much so that's thats hang up".split())
GOODBYE = "Thanks for calling. Goodbye."
# Longer than any ringing timeout parley-dial asks LiveKit SIP for.
ANSWER_TIMEOUT_S = 120.0



@dataclass(frozen=True)
class PhoneCall:
    identity: str
    number: str
    trunk_number: str
    direction: Literal["inbound", "outbound"]
    call_id: str

    @classmethod
    def of(cls, participant: rtc.Participant) -> PhoneCall | None:
        """The call a participant stands for, or None if it is not a SIP participant."""
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
            return None
        a = participant.attributes
        return cls(
            identity=participant.identity,
            number=a.get(ATTR_PHONE_NUMBER, ""),
            trunk_number=a.get(ATTR_TRUNK_NUMBER, ""),
            direction="inbound" if a.get(ATTR_RULE_ID) else "outbound",
            call_id=a.get(ATTR_CALL_ID, ""),
        )


def phone_settings(settings: Settings, call: PhoneCall) -> Settings:
    # Only the greeting changes: the instructions are tuned for the small local model,
    # and keypad presses reach the LLM as notes in the conversation.
    greeting = settings.sip_greeting if call.direction == "inbound" else settings.sip_outbound_greeting
    return settings.model_copy(update={"greeting": greeting})


def is_goodbye(text: str) -> bool:
    words = re.findall(r"[a-z']+", text.lower())
    return bool(words) and set(words) <= _FAREWELL_WORDS and bool(_FAREWELL.search(" ".join(words)))


class CalleeAudio:
    """The callee's audio, opened while the phone rings so nothing of the first word after
    the answer is lost; what arrives before `from_now()` (ringing) is dropped."""

    def __init__(self, stream: rtc.AudioStream) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[rtc.AudioFrame] | None = None
        self._task = asyncio.ensure_future(self._pump())

    @classmethod
    def of(cls, participant: rtc.RemoteParticipant) -> CalleeAudio:
        return cls(rtc.AudioStream.from_participant(participant=participant,
                                                    track_source=rtc.TrackSource.SOURCE_MICROPHONE,
                                                    sample_rate=amd.SAMPLE_RATE, num_channels=1))

    async def _pump(self) -> None:
        async for ev in self._stream:
            if self._queue is not None:
                self._queue.put_nowait(ev.frame)

    def from_now(self) -> AsyncIterator[rtc.AudioFrame]:
        """Every frame from this moment on (the queue starts now, not at the first read)."""
        self._queue = queue = asyncio.Queue()

        async def frames() -> AsyncIterator[rtc.AudioFrame]:
            while True:
                yield await queue.get()

        return frames()

    async def aclose(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._stream.aclose()


MAX_DIGITS_KEPT = 256


@dataclass(eq=False)
class PhoneLine(rtc.EventEmitter[Literal["dtmf", "ended"]]):
    """One phone call: keypad events, hang-up and transfer through LiveKit's server APIs.

    Events: `dtmf` (digit: str) for every key the caller presses, before the default
    menu acts on it; `ended` (reason: str) once, when the call is over.
    """

    ctx: JobContext
    call: PhoneCall
    settings: Settings
    owner: Call | None = None  # the call this line belongs to: ending goes through owner.end()
    session: AgentSession | None = None
    digits: list[str] = field(default_factory=list)
    ended_by: str = ""
    transfer_status: str = ""
    started_at: float = field(default_factory=time.time)
    answered_by: amd.AnsweredBy | None = None  # outbound: what answering-machine detection decided
    amd_result: amd.AmdResult | None = None
    # A key flood must not queue minutes of "You pressed …": one acknowledgement at a time.
    _keypad_ack: Any = None

    def __post_init__(self) -> None:
        super().__init__()

    @classmethod
    def for_participant(cls, ctx: JobContext, participant: rtc.RemoteParticipant,
                        settings: Settings) -> PhoneLine | None:
        call = PhoneCall.of(participant)
        if call is None:
            return None
        line = cls(ctx, call, settings)
        logger.info("phone call room=%s direction=%s number=%s trunk_number=%s sip_call_id=%s",
                    ctx.room.name, call.direction, call.number or "?", call.trunk_number or "?", call.call_id)
        return line

    async def answered(self) -> bool:
        """Whether there is a call to talk on; outbound, waits until the callee picks up.

        False (no answer, busy, the phone already gone) ends the job and its room.
        """
        # Outbound: hear the callee from the first moment of the answer (a "Hello?" is short).
        listening = self._open_audio() if self.call.direction == "outbound" and self.settings.sip_amd else None
        try:
            ok = await self._wait_answer()
            if ok and listening is not None:
                ok = await self._detect_machine(listening)
        finally:
            if listening is not None:
                await listening.aclose()
        if not ok:
            self.ended("no answer")
            self.ctx.add_shutdown_callback(self.ctx.delete_room)
            self.ctx.shutdown(reason="callee did not answer")
        return ok

    async def _wait_answer(self) -> bool:
        participant = self.ctx.room.remote_participants.get(self.call.identity)
        if self.call.direction == "inbound" or participant is None:
            return participant is not None
        done = asyncio.get_running_loop().create_future()

        def check(*_: object) -> None:
            p = self.ctx.room.remote_participants.get(self.call.identity)
            status = p.attributes.get(ATTR_CALL_STATUS, "") if p else "hangup"
            if status in ("active", "hangup") and not done.done():
                done.set_result(status == "active")

        self.ctx.room.on("participant_attributes_changed", check)
        self.ctx.room.on("participant_disconnected", check)
        try:
            check()
            logger.info("waiting for callee to answer room=%s number=%s", self.ctx.room.name, self.call.number)
            ok = await asyncio.wait_for(done, ANSWER_TIMEOUT_S)
        except TimeoutError:
            ok = False
        finally:
            self.ctx.room.off("participant_attributes_changed", check)
            self.ctx.room.off("participant_disconnected", check)
        logger.info("callee %s room=%s", "answered" if ok else "did not answer", self.ctx.room.name)
        return ok

    # --- answering-machine detection (outbound) ---------------------------------------------

    def _open_audio(self) -> CalleeAudio | None:
        participant = self.ctx.room.remote_participants.get(self.call.identity)
        return CalleeAudio.of(participant) if participant is not None else None

    async def _detect_machine(self, audio: CalleeAudio) -> bool:
        """Listen to the callee; a machine's greeting is let finish. False if they hung up."""
        models = self.ctx.proc.userdata.get("models")
        if models is None:  # no local models in this process: greet as before
            return True
        frames = audio.from_now()
        gone = asyncio.get_running_loop().create_future()

        def left(p: rtc.RemoteParticipant) -> None:
            if p.identity == self.call.identity and not gone.done():
                gone.set_result(None)

        self.ctx.room.on("participant_disconnected", left)
        task = asyncio.ensure_future(amd.listen(frames, models.vad, models.stt))
        try:
            await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.ctx.room.off("participant_disconnected", left)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            logger.info("callee hung up during answering-machine detection room=%s", self.ctx.room.name)
            return False
        self.amd_result = result = task.result()
        self.answered_by = result.answered_by
        logger.info("answered by %s room=%s decided_ms=%.0f reason=%s message_after_ms=%s transcript=%r",
                    result.answered_by, self.ctx.room.name, result.decision_ms, result.reason,
                    f"{result.message_after_ms:.0f}" if result.message_after_ms is not None else "-",
                    result.transcript)
        return True

    def agent(self) -> Agent:
        if self.answered_by == "machine":
            return VoicemailAgent(self)
        return PhoneAgent(self)

    def attach(self, session: AgentSession) -> None:
        self.session = session
        self.ctx.room.on("sip_dtmf_received", self._on_dtmf)

        @session.on("close")
        def _on_close(_ev: Any) -> None:
            if not self.ended_by:  # hung up by the caller, or the session ended otherwise
                self.ended(self.owner.ended_by if self.owner and self.owner.ended_by else "caller")

    # --- keypad ------------------------------------------------------------------------

    def _on_dtmf(self, ev: rtc.SipDTMF) -> None:
        if ev.participant is not None and ev.participant.identity != self.call.identity:
            return
        if len(self.digits) < MAX_DIGITS_KEPT:  # the report's record of keys, bounded
            self.digits.append(ev.digit)
        logger.info("dtmf room=%s digit=%s code=%d", self.ctx.room.name, ev.digit, ev.code)
        self.emit("dtmf", ev.digit)
        self.spawn(self._keypad(ev.digit))

    async def _keypad(self, digit: str) -> None:
        if self.session is None or self.ended_by:
            return
        if digit == HANGUP_DIGIT:
            await self.hang_up(GOODBYE, by="caller keypad")
        elif digit == TRANSFER_DIGIT:
            await self.transfer()
        else:
            await self._note(f"(the caller pressed {digit})")
            if self._keypad_ack is None or self._keypad_ack.done():
                self._keypad_ack = self.session.say(f"You pressed {digit}.")

    async def _note(self, text: str) -> None:
        """Put a line in the conversation the LLM sees on its next turn."""
        agent = self.session.current_agent if self.session else None
        if agent is None:
            return
        chat_ctx = agent.chat_ctx.copy()
        chat_ctx.add_message(role="user", content=text)
        await agent.update_chat_ctx(chat_ctx)

    # --- ending and transferring -------------------------------------------------------

    async def hang_up(self, goodbye: str | None = GOODBYE, *, by: str = "agent") -> None:
        """Say goodbye, then end the SIP call (LiveKit SIP sends BYE when the room goes)."""
        if self.owner is not None:
            await self.owner.end(by, goodbye=goodbye)

    async def transfer(self, to: str | None = None) -> bool:
        """Cold-transfer the caller (SIP REFER) to `to` or PARLEY_SIP_TRANSFER_TO."""
        target = to or self.settings.sip_transfer_to
        if self.session is None:
            return False
        if not target:
            self.session.say("Sorry, there is no one to transfer you to.")
            return False
        logger.info("transfer room=%s to=%s", self.ctx.room.name, target)
        await self.session.say("Transferring your call now.", allow_interruptions=False).wait_for_playout()
        try:
            await asyncio.wait_for(self.ctx.transfer_sip_participant(self.call.identity, target), 30)
        except (TimeoutError, api.TwirpError, OSError) as e:
            self.transfer_status = f"failed: {getattr(e, 'message', e)}"
            logger.warning("transfer failed room=%s to=%s: %s", self.ctx.room.name, target, self.transfer_status)
            self.session.say("Sorry, the transfer did not go through.")
            return False
        self.transfer_status = f"transferred to {target}"
        logger.info("transfer done room=%s to=%s", self.ctx.room.name, target)
        if self.owner is not None:
            await self.owner.end("transfer")
        return True

    def ended(self, by: str) -> None:
        """Record who ended the phone call (once) and tell `ended` listeners."""
        if not self.ended_by:
            self.ended_by = by
            logger.info("phone call ending room=%s by=%s duration=%.1fs", self.ctx.room.name, by,
                        time.time() - self.started_at)
            self.emit("ended", by)

    def spawn(self, coro: Any) -> None:
        if self.owner is not None:
            self.owner.spawn(coro)
        else:
            asyncio.ensure_future(coro)

    # --- for LLMs that call tools ------------------------------------------------------

    def tools(self) -> list[llm.Tool]:
        """Phone-only tools: `transfer_call` when there is somewhere to transfer to."""
        if not self.settings.sip_transfer_to:
            return []
        line = self

        @function_tool(name="transfer_call")
        async def transfer_call(ctx: RunContext) -> None:
            """Transfer the caller to a human operator when they ask for a person. Say nothing yourself."""
            line.spawn(line.transfer())

        return [transfer_call]

    def summary(self) -> dict[str, Any]:
        """The `phone` section of the session report."""
        return {
            "direction": self.call.direction,
            "number": self.call.number,
            "trunk_number": self.call.trunk_number,
            "sip_call_id": self.call.call_id,
            "dtmf": list(self.digits),
            "ended_by": self.ended_by or "unknown",
            "transfer": self.transfer_status,
            "duration_s": round(time.time() - self.started_at, 1),
            # Inbound callers dialled us; outbound without detection is assumed a person.
            "answered_by": self.answered_by or "human",
            "amd": self.amd_result.summary() if self.amd_result is not None else None,
        }


class PhoneAgent(ParleyAgent):
    """ParleyAgent with a phone greeting, phone tools and a deterministic goodbye."""

    def __init__(self, line: PhoneLine) -> None:
        super().__init__(phone_settings(line.settings, line.call))
        self._line = line

    async def on_enter(self) -> None:
        # Phone tools join the others only for a model that is given tools at all.
        if self.tools:
            await self.update_tools([*self.tools, *self._line.tools()])
        await super().on_enter()

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        if is_goodbye(new_message.text_content or ""):
            logger.info("caller said goodbye room=%s: %r", self._line.ctx.room.name, new_message.text_content)
            self._line.spawn(self._line.hang_up(GOODBYE, by="caller goodbye"))
            raise StopResponse()
        await super().on_user_turn_completed(turn_ctx, new_message)


class VoicemailAgent(Agent):
    """An answering machine took the call: leave the message, then hang up (Call.end)."""

    def __init__(self, line: PhoneLine) -> None:
        super().__init__(instructions="Leave a short voicemail message.")
        self._line = line

    async def on_enter(self) -> None:
        message = self._line.settings.sip_voicemail_message
        logger.info("leaving a voicemail message room=%s", self._line.ctx.room.name)
        if self._line.owner is not None:
            self._line.owner.end_soon("voicemail", goodbye=message)

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        raise StopResponse()  # a machine is recording: nothing it says is answered
