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
import logging
import re
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from livekit import rtc
from livekit.agents import Agent, ModelSettings, llm, stt, tts
from livekit.agents.voice.events import ConversationItemAddedEvent

from . import compat, models
from .providers.espeak_tts import EspeakOptions, EspeakTTS
from .providers.llama_translate import LlamaTranslator, TranslatorOptions
from .providers.whisper_interpreter import InterpreterSTTOptions, WhisperInterpreterSTT
from .settings import Settings

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

    @classmethod
    def load(cls, settings: Settings, english_voice: tts.TTS) -> InterpreterModels:
        t0 = time.perf_counter()
        pair = settings.interpreter_pair
        whisper = WhisperInterpreterSTT(InterpreterSTTOptions(
            model_path=models.whisper_model("base", settings.model_dir), languages=pair))
        # The text model translates every direction (Whisper's own translate task, into
        # English only, measured far less faithful: see README "Interpreter mode").
        translator = LlamaTranslator(TranslatorOptions(model_path=models.qwen25_05b_gguf(settings.model_dir),
                                                       n_threads=settings.llm_threads))
        voices = {lang: (english_voice if lang == "en" else EspeakTTS(EspeakOptions(voice=lang))) for lang in pair}
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
    translated_by: str  # whisper | llm | none
    translate_ms: float


class InterpreterAgent(Agent):
    def __init__(self, settings: Settings, loaded: InterpreterModels) -> None:
        super().__init__(
            instructions="Interpreter: translate each utterance into the call's other language.",
            tools=[],
            stt=loaded.stt,
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
        self._pair = settings.interpreter_pair
        self._heard: list[Heard] = []
        self._by_user_text: dict[str, Rendition] = {}
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

    async def translate(self, text: str) -> Rendition:
        if (done := self._by_user_text.get(text)) is not None:  # a preemptive run already made it
            return done
        segments = self._segments_of(text)
        source = segments[0].language if segments else guess_language(text, self._pair)
        target = self.other(source)
        t0 = time.perf_counter()
        if self._models.translator is not None:
            translation = await asyncio.to_thread(self._models.translator.translate, text, source, target)
            how = "llm"
        elif target == "en" and segments and all(s.english for s in segments):
            translation, how = " ".join(s.english or "" for s in segments).strip(), "whisper"
        else:
            translation, how = text, "none"  # nothing can translate this direction: repeat it
        r = Rendition(source, target, text, translation, how, round((time.perf_counter() - t0) * 1000, 1))
        logger.info("interpreted %s->%s by %s in %.0f ms: %r -> %r", source, target, how, r.translate_ms, text,
                    translation)
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

    @staticmethod
    def _stamp_user(item: llm.ChatMessage, r: Rendition) -> None:
        item.extra.update({"language": r.source, "translation": r.translation, "translation_language": r.target})

    async def on_user_turn_completed(self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage) -> None:
        # Nothing of the history is needed: each utterance is translated on its own.
        text = new_message.text_content or ""
        if text.strip():
            self._stamp_user(new_message, await self.translate(text))

    async def llm_node(self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
                       ) -> AsyncIterable[str]:
        last = next((i for i in reversed(chat_ctx.items) if i.type == "message" and i.role == "user"), None)
        text = (last.text_content or "").strip() if last is not None else ""
        if not text:
            return
        r = await self.translate(text)
        if r.translation:
            yield r.translation

    # --- speech out: the target language's voice ------------------------------------------

    async def tts_node(self, text: AsyncIterable[str], model_settings: ModelSettings) -> AsyncIterable[rtc.AudioFrame]:
        whole = "".join([t async for t in text]).strip()
        if not whole:
            return
        language = self._spoken_in.get(_key(whole)) or guess_language(whole, self._pair)
        voice = self._models.voices.get(language) or self._models.voices[self._pair[0]]
        # Its transcript is published as this audio plays, right after: stamp it now.
        compat.set_transcript_attribute(self.session, user=False, key=LANGUAGE_ATTRIBUTE, value=language)
        async with voice.synthesize(whole) as stream:
            async for ev in stream:
                yield ev.frame

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
                               "translated_by": r.translated_by, "translate_ms": r.translate_ms})
            self.renditions.append(r)
