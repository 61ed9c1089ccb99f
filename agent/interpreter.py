"""Interpreter mode (`PARLEY_INTERPRETER=1`): the agent translates instead of conversing.

Each utterance is transcribed by multilingual Whisper, which also says which of the call's
two languages (`PARLEY_INTERPRETER_LANGUAGES`, e.g. `en,es`) it is in; the agent then
speaks its translation into the other one. Nothing is answered or added.

- Speech → text + language: `WhisperInterpreterSTT` (agent/providers/whisper_interpreter.py),
  Whisper base, beam 5, language detection restricted to the call's pair.
- Text → text: the packaged instruction model (`LlamaTranslator`,
  agent/providers/llama_translate.py), both directions. Whisper's own `translate` task
  (into English only) is kept as the fallback: on the benchmark it kept far fewer content
  words than the text model on Whisper's transcript.
- Text → speech: Piper's packaged English voice for English, espeak-ng's voice for every
  other language (agent/providers/espeak_tts.py): no packaged neural voice speaks them.
- Transcripts: the original is the caller's transcript, the translation the agent's, both
  on `lk.transcription` with the segment attribute `language` (ISO 639-1), so a client
  shows (or speaks) only the language it wants; both are in the session report's chat
  history, each message's `extra` holding its language (and the other side's text).

Two people in one room (a browser and a phone): the agent translates the participant its
session is linked to and speaks into the room on its one audio track, which everyone hears
(see README "Interpreter mode" for what is missing).
One caller alone hears their own words translated back, which is how parley-call tests it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, ModelSettings, llm, room_io, stt, tts
from livekit.agents.vad import VAD
from livekit.agents.voice.events import ConversationItemAddedEvent

from . import compat, models
from .providers.espeak_tts import EspeakOptions, EspeakTTS
from .providers.llama_translate import (
    LlamaTranslator,
    LocalTranslateLLM,
    StreamCleaner,
    TranslatorOptions,
    request_messages,
)
from .providers.whisper_interpreter import InterpreterSTTOptions, WhisperInterpreterSTT
from .settings import Settings
from .speculative_stt import SpeculativeSTT

logger = logging.getLogger("parley.interpreter")

LANGUAGE_ATTRIBUTE = "language"
# After the VAD's own 250 ms of silence: a pause this long more ends the utterance.
ENDPOINTING_DELAY_S = 0.1  # the lk.transcription segment attribute naming the text's language

# Spoken when the call starts, in each of its languages (so both sides know who is there,
# and a caller's client hears the agent before it speaks).
READY = {"en": "Interpreter ready.", "es": "Intérprete listo.", "fr": "Interprète prêt.",
         "de": "Dolmetscher bereit.", "it": "Interprete pronto.", "pt": "Intérprete pronto."}

# A few very common words per language: enough to tell which of two languages a typed
# message is in (spoken ones get Whisper's language detection).
_COMMON = {
    "en": {"the", "is", "are", "you", "i", "what", "where", "and", "to", "of", "my", "it", "this", "please"},
    "es": {"el", "la", "los", "las", "es", "está", "de", "que", "y", "por", "dónde", "qué", "mi", "un", "una", "favor"},
    "fr": {"le", "la", "les", "est", "de", "et", "je", "vous", "où", "que", "un", "une", "mon", "s'il"},
    "de": {"der", "die", "das", "ist", "und", "ich", "sie", "wo", "nicht", "ein", "eine", "mein", "bitte"},
    "it": {"il", "la", "è", "di", "e", "che", "dove", "un", "una", "mio", "per", "non"},
    "pt": {"o", "a", "os", "é", "de", "que", "e", "onde", "um", "uma", "meu", "por", "não"},
}


# A streamed translation is spoken in pieces: the first after this many words even without a
# clause end (most of a second of speech: the model writes the next words meanwhile), later
# ones at clause ends or after LATER_WORDS.
FIRST_WORDS = 3
LATER_WORDS = 10
_CLAUSE_END = re.compile(r"[,.;:!?¿¡]\s")
_SETTLED_WORD = re.compile(r"\S+(?=\s)")


def clause_cut(buffer: str, max_words: int) -> int | None:
    """Where to cut the next piece to speak off `buffer`, or None to wait for more text."""
    for m in _CLAUSE_END.finditer(buffer):
        if len(buffer[: m.start()].split()) >= 2:
            return m.end()
    settled = list(_SETTLED_WORD.finditer(buffer))  # words a space follows (the last may still grow)
    return settled[max_words - 1].end() if len(settled) >= max_words else None


async def _speak(voice: tts.TTS, text: str) -> AsyncIterable[rtc.AudioFrame]:
    async with voice.synthesize(text.strip()) as stream:
        async for ev in stream:
            yield ev.frame


@dataclass(eq=False)
class Progress:
    """One utterance's translation as it is written: the pieces so far, for the reply to speak."""

    pieces: list[str] = field(default_factory=list)
    target: str = ""
    finished: bool = False
    first_at: float = 0.0  # perf_counter of the first piece
    task: asyncio.Task[Rendition] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, piece: str) -> None:
        if piece:
            self.first_at = self.first_at or time.perf_counter()
            self.pieces.append(piece)
            self._changed.set()

    def finish(self) -> None:
        self.finished = True
        self._changed.set()

    async def follow(self) -> AsyncIterable[str]:
        i = 0
        while True:
            if i < len(self.pieces):
                i += 1
                yield self.pieces[i - 1]
                continue
            if self.finished:
                return
            self._changed.clear()
            await self._changed.wait()


def translation_request(text: str, source: str, target: str) -> llm.ChatContext:
    """The chat a translation LLM is sent; the local translator reads `extra["translate"]`."""
    ctx = llm.ChatContext()
    msgs = request_messages(text, source, target)
    for i, m in enumerate(msgs):
        extra = {"translate": {"text": text, "source": source, "target": target}} if i == len(msgs) - 1 else {}
        ctx.add_message(role=m["role"], content=m["content"], extra=extra)
    return ctx


def _key(text: str) -> str:
    return " ".join(text.split())


def guess_language(text: str, languages: tuple[str, str]) -> str:
    words = re.findall(r"[\w']+", text.lower())
    scores = [sum(w in _COMMON.get(lang, set()) for w in words) for lang in languages]
    return languages[1] if scores[1] > scores[0] else languages[0]


@dataclass
class InterpreterModels:
    """What a job process loads once for interpreter mode (next to LocalModels)."""

    stt: WhisperInterpreterSTT
    translator: LlamaTranslator | None  # None: only Whisper's translate task (into English) is left
    voices: dict[str, tts.TTS]

    @functools.cached_property
    def translation_llm(self) -> llm.LLM:
        """The translator as an LLM, made once: what the sessions hold (and a cloud LLM falls back to)."""
        return LocalTranslateLLM(self.translator)

    @classmethod
    def load(cls, settings: Settings, english_voice: tts.TTS | None = None) -> InterpreterModels:
        """`english_voice`: Piper, when the caller has it loaded; else the worker adds it."""
        t0 = time.perf_counter()
        pair = settings.interpreter_pair
        whisper = WhisperInterpreterSTT(InterpreterSTTOptions(
            model_path=models.whisper_model("base", settings.model_dir), languages=pair,
            phone_noise_floor_db=settings.stt_phone_noise_floor_db))
        # The text model translates every direction (Whisper's own translate task, into
        # English only, measured far less faithful: see README "Interpreter mode").
        translator = LlamaTranslator(TranslatorOptions(model_path=models.llm_gguf(
            settings.interpreter_model, settings.model_dir, "PARLEY_INTERPRETER_MODEL"),
                                                       n_threads=settings.llm_threads))
        voices: dict[str, tts.TTS] = {lang: EspeakTTS(EspeakOptions(voice=lang)) for lang in pair if lang != "en"}
        if english_voice is not None and "en" in pair:
            voices["en"] = english_voice
        logger.info("interpreter models for %s ready in %.2fs", "/".join(pair), time.perf_counter() - t0)
        return cls(whisper, translator, voices)


@dataclass
class Heard:
    """One recognised speech segment."""

    text: str
    language: str
    english: str | None  # Whisper's own translation, when it made one
    at: float = field(default_factory=time.monotonic)


@dataclass
class Rendition:
    """One utterance and its translation (what the report's messages carry in `extra`)."""

    source: str
    target: str
    original: str
    translation: str
    translated_by: str  # cloud | llm | whisper | none
    translate_ms: float
    first_words_ms: float | None = None  # until the first piece could be spoken


class InterpreterAgent(Agent):
    def __init__(self, settings: Settings, loaded: InterpreterModels,
                 speaker_language: Callable[[], str | None] | None = None,
                 translation_llm: llm.LLM | None = None, vad: VAD | None = None) -> None:
        """`speaker_language()`: the language the speaker said they speak (their client's
        `parley.language` attribute), used instead of detection; None or "" means detect.
        `translation_llm`: the session's LLM chain (the local translator, or a cloud LLM with the
        local translator behind it in a FallbackAdapter); default the local translator.
        `vad`: the session's VAD; with it Whisper starts 0.1 s into each pause instead of when
        the VAD closes the utterance (agent/speculative_stt.py), as in a conversation."""
        heard: stt.STT = loaded.stt.for_speaker(speaker_language) if speaker_language is not None else loaded.stt
        # The local translator evaluates the words so far while the speaker goes on
        # (LlamaTranslator.prefill_partial), unless a cloud LLM translates first.
        chain = translation_llm or loaded.translation_llm
        self._local_translator = (loaded.translator if isinstance(chain, LocalTranslateLLM)
                       and hasattr(loaded.translator, "prefill_partial_soon") else None)
        self._early: SpeculativeSTT | None = None
        if vad is not None:
            self._early = SpeculativeSTT(stt=heard, vad=vad, on_partial=self._heard_so_far,
                                         partial_wanted=self._wants_words_so_far)
        super().__init__(
            instructions="Interpreter: translate each utterance into the call's other language.",
            tools=[],
            stt=self._early or heard,
            tts=loaded.voices.get("en") or next(iter(loaded.voices.values())),
            # Its tts_node speaks each translation whole: there are no pieces to align to.
            use_tts_aligned_transcript=False,
            # An utterance is translated as soon as the VAD closes it: an interpreter has no
            # question to wait for the end of. The translation is spoken whole (no barge-in):
            # the other side must hear it, and speech meanwhile is still heard and translated next.
            turn_handling={
                "turn_detection": "vad",
                "endpointing": {"min_delay": ENDPOINTING_DELAY_S, "max_delay": 1.0},
                "interruption": {"enabled": False, "discard_audio_if_uninterruptible": False},
            },
        )
        self._settings = settings
        self._models = loaded
        self._translation_llm = translation_llm
        self._pair = settings.interpreter_pair
        self._heard: list[Heard] = []
        self._by_user_text: dict[str, Rendition] = {}
        self._progress: dict[str, Progress] = {}
        self._by_translation: dict[str, Rendition] = {}
        self._spoken_in: dict[str, str] = {}  # text the agent says -> its language (for voice and transcript)
        self.renditions: list[Rendition] = []

    def other(self, language: str) -> str:
        return self._pair[1] if language == self._pair[0] else self._pair[0]

    async def on_enter(self) -> None:
        self.session.on("conversation_item_added", self._on_item)
        for lang in self._pair:
            text = READY.get(lang, READY["en"])
            self._spoken_in[_key(text)] = lang if lang in READY else "en"
            self.session.say(text, allow_interruptions=False)

    # --- speech in: remember each segment's language and Whisper's translation ------------------

    async def stt_node(self, audio: AsyncIterable[rtc.AudioFrame], model_settings: ModelSettings
                       ) -> AsyncIterable[stt.SpeechEvent | str]:
        async for ev in Agent.default.stt_node(self, audio, model_settings):
            if isinstance(ev, stt.SpeechEvent) and ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT and ev.alternatives:
                d = ev.alternatives[0]
                english = d.target_texts[0] if d.target_texts else None
                lang = str(d.language or self._pair[0])[:2]
                self._heard.append(Heard(d.text.strip(), lang, english))
                del self._heard[:-20]
                compat.set_transcript_attribute(self.session, user=True, key=LANGUAGE_ATTRIBUTE, value=lang)
            yield ev

    def _wants_words_so_far(self) -> bool:
        """Whether a words-so-far run would be used: a local translator to evaluate them, and
        the agent listening (while it speaks, its voice needs the cores)."""
        if self._local_translator is None:
            return False
        try:
            return self.session.agent_state == "listening"
        except RuntimeError:  # not started yet
            return False

    def _heard_so_far(self, words: stt.SpeechData) -> None:
        lang = str(words.language or "")[:2]
        if self._local_translator is not None and self._early is not None and lang in self._pair and self._wants_words_so_far():
            early = self._early
            self._local_translator.prefill_partial_soon(words.text, lang, self.other(lang), keep_going=lambda: not early.pausing)

    def _segments_of(self, text: str) -> list[Heard]:
        """The recognised segments a user message was made of (the framework joins them)."""
        out: list[Heard] = []
        rest = " ".join(text.split())
        for h in reversed(self._heard):
            piece = " ".join(h.text.split())
            if piece and rest.endswith(piece):
                out.insert(0, h)
                rest = rest[: -len(piece)].rstrip()
                if not rest:
                    break
        return out if not rest else []

    # --- the translation ------------------------------------------------------------------

    def start(self, text: str) -> Progress:
        """The translation of `text`, started now unless it already runs (the turn's end and
        the reply both ask for it, and a preemptive run may come first: one per utterance)."""
        if (p := self._progress.get(text)) is None:
            p = self._progress[text] = Progress()
            p.task = asyncio.ensure_future(self._translate(text, p))
        return p

    async def _translate(self, text: str, progress: Progress) -> Rendition:
        segments = self._segments_of(text)
        source = segments[0].language if segments else guess_language(text, self._pair)
        target = progress.target = self.other(source)
        t0 = time.perf_counter()
        how = "none"
        try:
            if self._translation_llm is not None or self._models.translator is not None:
                how = await self._ask_llm(text, source, target, progress)
            elif target == "en" and segments and all(s.english for s in segments):
                progress.add(" ".join(s.english or "" for s in segments).strip())
                how = "whisper"
            else:
                progress.add(text)  # nothing can translate this direction: repeat it
        finally:
            progress.finish()
        translation = "".join(progress.pieces).strip()
        r = Rendition(source, target, text, translation, how, round((time.perf_counter() - t0) * 1000, 1),
                      round((progress.first_at - t0) * 1000, 1) if progress.first_at else None)
        logger.info("interpreted %s->%s by %s in %.0f ms (first words %s ms): %r -> %r", source, target, how,
                    r.translate_ms, r.first_words_ms, text, translation)
        self._by_user_text[text] = r
        self._by_translation[_key(translation)] = r
        self._spoken_in[_key(translation)] = target
        # The caller's message may already be in the history (it is added when the turn is
        # committed, which can come before or after this): stamp it here or in _on_item.
        for item in reversed(self.session.history.items):
            if item.type == "message" and item.role == "user" and (item.text_content or "") == text:
                self._stamp_user(item, r)
                break
        return r

    async def _ask_llm(self, text: str, source: str, target: str, progress: Progress) -> str:
        """Streams the translation into `progress`; returns who made it: "cloud", or "llm" for
        the local model (alone, or after the cloud one failed)."""
        chain = self._translation_llm or self._models.translation_llm
        cleaner = StreamCleaner(target)
        first_id = ""
        try:
            async with chain.chat(chat_ctx=translation_request(text, source, target)) as stream:
                async for chunk in stream:
                    if chunk.delta is not None and chunk.delta.content:
                        first_id = first_id or chunk.id
                        for piece in cleaner.feed(chunk.delta.content):
                            progress.add(piece)
            for piece in cleaner.finish():
                progress.add(piece)
        except Exception as e:  # every provider failed: this utterance goes untranslated, the call goes on
            logger.error("translation failed %s->%s: %s", source, target, e)
            return "none"
        return "llm" if first_id.startswith("translate_") else "cloud"

    @staticmethod
    def _stamp_user(item: llm.ChatMessage, r: Rendition) -> None:
        item.extra.update({"language": r.source, "translation": r.translation, "translation_language": r.target})

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        # Nothing of the history is needed: each utterance is translated on its own. Not
        # awaited: the reply speaks the first words while the rest is written (the message
        # is stamped when the translation is done).
        text = new_message.text_content or ""
        if text.strip():
            self.start(text)

    async def llm_node(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
                       ) -> AsyncIterable[str]:
        last = next((i for i in reversed(chat_ctx.items) if i.type == "message" and i.role == "user"), None)
        text = (last.text_content or "") if last is not None else ""
        if not text.strip():
            return
        async for piece in self.start(text).follow():
            yield piece

    def _language_of(self, spoken: str) -> str | None:
        """The language of a text being spoken, from its start: a translation being written
        now, or a text said before (a translation, the ready message)."""
        start = _key(spoken)
        if not start:
            return None
        for p in reversed(list(self._progress.values())):
            if p.target and not p.finished and _key("".join(p.pieces)).startswith(start):
                return p.target
        return next((lang for text, lang in reversed(self._spoken_in.items()) if text.startswith(start)), None)

    # --- speech out: the target language's voice ------------------------------------------

    async def tts_node(self, text: AsyncIterable[str], model_settings: ModelSettings) -> AsyncIterable[rtc.AudioFrame]:
        # A translation arrives as the model writes it: its first clause (or first few words)
        # is spoken at once, the rest clause by clause, so the listener does not wait for the
        # whole sentence. The voice is the language of the first piece (llm_node or say()).
        voice: tts.TTS | None = None
        buffer, spoken = "", False
        async for piece in text:
            buffer += piece
            if voice is None:
                language = self._language_of(buffer)
                if language is None and len(buffer.split()) < FIRST_WORDS:
                    continue  # not known yet: a few words more tell
                voice = self._voice(language or guess_language(buffer, self._pair))
            while (cut := clause_cut(buffer, FIRST_WORDS if not spoken else LATER_WORDS)) is not None:
                clause, buffer = buffer[:cut], buffer[cut:]
                spoken = True
                async for frame in _speak(voice, clause):
                    yield frame
        if buffer.strip():
            voice = voice or self._voice(self._language_of(buffer) or guess_language(buffer, self._pair))
            async for frame in _speak(voice, buffer):
                yield frame

    def _voice(self, language: str) -> tts.TTS:
        # The transcript of this speech is published as it plays, right after: stamp it now.
        compat.set_transcript_attribute(self.session, user=False, key=LANGUAGE_ATTRIBUTE, value=language)
        voice = self._models.voices.get(language)
        return voice if voice is not None else self._models.voices[self._pair[0]]

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        # The report's chat history is these items: each message gets its language, and the
        # other side's text, in `extra`.
        item = ev.item
        if item.type != "message":
            return
        text = item.text_content or ""
        if item.role == "user":
            if (u := self._by_user_text.get(text)) is not None:
                self._stamp_user(item, u)
            return
        if item.role != "assistant":
            return
        r = self._by_translation.get(_key(text))
        if r is None and _key(text) in self._spoken_in:
            item.extra["language"] = self._spoken_in[_key(text)]
        elif r is not None:
            item.extra.update({"language": r.target, "source_language": r.source, "original": r.original,
                               "translated_by": r.translated_by, "translate_ms": r.translate_ms,
                               "first_words_ms": r.first_words_ms})
            self.renditions.append(r)


# --- several people in one room --------------------------------------------------------

PAIR_ATTRIBUTE = "parley.interpreter"  # on the agent: the call's pair ("en,es"); clients show a toggle
# The language a person speaks ("" = detect): said by their client with this RPC to the agent
# (the web app's toggle, during the call), or set as this attribute where the token is minted.
SET_LANGUAGE_RPC = "parley.set_language"
SPEAKER_LANGUAGE_ATTRIBUTE = "parley.language"
TRACK_PREFIX = "interpreter:"
_HUMAN_KINDS = (rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_SIP)


def track_name(identity: str) -> str:
    """The agent's audio track that speaks `identity`'s words translated: everyone else plays
    it; that speaker's own client plays it only when alone with the agent."""
    return f"{TRACK_PREFIX}{identity}"


class InterpreterRoom:
    """Interpreter mode for everyone in the room: one `AgentSession` per speaker (the
    framework's room I/O follows one linked participant), all sharing the job process's
    models, each speaking its speaker's translations on its own track (`track_name`).

    The first caller's session is the call's (built by the worker, with the report and
    metrics); the others are started here when a person publishes a microphone, and closed
    when they leave. The room
    is deleted, ending the job, when the last person has left.
    """

    def __init__(self, ctx: Any, settings: Settings, loaded: InterpreterModels, vad: Any, first: str,
                 translation_llm: llm.LLM | None = None) -> None:
        self._ctx = ctx
        self._translation_llm = translation_llm
        self._settings = settings
        self._loaded = loaded
        self._vad = vad
        self._first = first
        self._sessions: dict[str, AgentSession] = {}
        self._agents: dict[str, InterpreterAgent] = {}
        self._left: dict[str, list[dict[str, Any]]] = {}  # a speaker who left: their messages
        self._declared: dict[str, str] = {}  # identity -> language said by RPC ("" = detect)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ending = False

    @property
    def room(self) -> rtc.Room:
        return self._ctx.room

    def declared_language(self, identity: str) -> str | None:
        if identity in self._declared:
            code = self._declared[identity]
        else:
            p = self.room.remote_participants.get(identity)
            code = (p.attributes.get(SPEAKER_LANGUAGE_ATTRIBUTE, "") if p is not None else "").strip().lower()
        return code if code in self._settings.interpreter_pair else None

    def set_language(self, data: rtc.RpcInvocationData) -> str:
        """The `parley.set_language` RPC: payload one code of the pair, or "" to detect again."""
        code = data.payload.strip().lower()
        if code and code not in self._settings.interpreter_pair:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR,
                               f"language {code[:16]!r} is not one of this call's: {','.join(self._settings.interpreter_pair)}")
        self._declared[data.caller_identity] = code
        logger.info("speaker %s speaks %s", data.caller_identity, code or "(detected)")
        return json.dumps({"language": code})

    def agent_for(self, identity: str) -> InterpreterAgent:
        agent = InterpreterAgent(self._settings, self._loaded, lambda: self.declared_language(identity),
                                 translation_llm=self._translation_llm, vad=self._vad)
        self._agents[identity] = agent
        return agent

    def room_options(self, identity: str, **kw: Any) -> room_io.RoomOptions:
        return room_io.RoomOptions(
            participant_identity=identity,
            audio_input=room_io.AudioInputOptions(sample_rate=16000, frame_size_ms=20, pre_connect_audio=False),
            audio_output=room_io.AudioOutputOptions(track_name=track_name(identity)),
            # Someone else may still be talking: the room ends with its last person (below).
            delete_room_on_close=False,
            **kw,
        )

    async def start(self) -> None:
        """After the first caller's session has started: advertise the pair, follow the room."""
        self.room.local_participant.register_rpc_method(SET_LANGUAGE_RPC, self.set_language)
        await self.room.local_participant.set_attributes({PAIR_ATTRIBUTE: ",".join(self._settings.interpreter_pair)})
        self.room.on("track_published", self._on_published)
        self.room.on("participant_disconnected", self._on_disconnected)
        for p in list(self.room.remote_participants.values()):
            for pub in list(p.track_publications.values()):
                self._on_published(pub, p)

    def _humans(self) -> list[rtc.RemoteParticipant]:
        return [p for p in self.room.remote_participants.values() if p.kind in _HUMAN_KINDS]

    def _on_published(self, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
        # A speaker is a person with a microphone: a listener who publishes nothing needs no session.
        if (pub.kind != rtc.TrackKind.KIND_AUDIO or p.kind not in _HUMAN_KINDS or p.identity == self._first
                or p.identity in self._sessions):
            return
        # The framework asks the session's LLM for each reply; the agent's llm_node translates.
        session: AgentSession = AgentSession(vad=self._vad, llm=self._translation_llm or self._loaded.translation_llm)
        self._sessions[p.identity] = session
        self._spawn(self._start_session(p.identity, session))

    async def _start_session(self, identity: str, session: AgentSession) -> None:
        logger.info("interpreting for a second speaker identity=%s", identity)
        try:
            await session.start(agent=self.agent_for(identity), room=self.room,
                                room_options=self.room_options(identity, text_input=False), record=False)
        except Exception as e:  # one speaker's session must not end the others' call
            logger.error("interpreter session for %s did not start: %s", identity, e)
            self._sessions.pop(identity, None)

    def _on_disconnected(self, p: rtc.RemoteParticipant) -> None:
        session = self._sessions.pop(p.identity, None)
        if session is not None:
            self._left[p.identity] = self.messages(p.identity)
            self._spawn(session.aclose())
        if not self._humans() and not self._ending:
            self._ending = True
            logger.info("the last speaker left: ending the interpreter call")
            self._spawn(self._end())

    async def _end(self) -> None:
        try:
            await self._ctx.delete_room()
        except Exception as e:  # already gone
            logger.debug("room delete: %s", e)
        self._ctx.shutdown(reason="everyone left")

    def messages(self, identity: str) -> list[dict[str, Any]]:
        if identity in self._left:
            return self._left[identity]
        agent = self._agents.get(identity)
        if agent is None:
            return []
        out = []
        try:
            items = agent.session.history.items
        except RuntimeError:  # its session never started
            return []
        for item in items:
            if item.type == "message" and (item.text_content or "").strip():
                out.append({"role": item.role, "text": item.text_content, **item.extra})
        return out

    def report(self) -> dict[str, Any]:
        """The report's `interpreter` section: the pair and, for each speaker after the first
        (whose messages are the report's own chat history), what they said and its translation."""
        others = [i for i in {*self._agents, *self._left} if i != self._first]
        return {"languages": list(self._settings.interpreter_pair),
                "speakers": {i: self.messages(i) for i in sorted(others)}}

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
