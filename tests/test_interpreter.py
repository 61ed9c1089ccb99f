"""Interpreter mode's wiring, fast: settings, the language guess for typed text, and the
InterpreterAgent in a text-mode session with fake models (the translator stand-in tags its
output with the target language; the real models are in tests/test_interpreter_e2e.py)."""

from __future__ import annotations

import time

import pytest
from livekit.agents import stt

from agent.callstate import Call
from agent.interpreter import InterpreterAgent, InterpreterModels, clause_cut, guess_language
from agent.providers import LocalModels, select_models
from agent.providers.llama_translate import StreamCleaner
from agent.session import build_session
from agent.settings import Settings, SettingsError
from tests.fakes.openai import OpenAIFake, Reply, last_user_text
from tests.fakes.providers import FakeLLM, FakeSTT, FakeTTS, SilentVAD
from tests.fakes.turns import Playout
from tests.test_session import chosen, fake_models


class TaggingTranslator:
    """Stands in for the translation model: says which direction it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str]] = []

    def translate(self, text: str, source: str, target: str) -> str:
        self.asked.append((text, source, target))
        return f"[{target}] {text}"


@pytest.mark.parametrize("value", ["en", "en,en", "en,xx", "en,es,fr", "english,spanish"])
def test_bad_language_pair_is_one_line(value: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.load(PARLEY_INTERPRETER_LANGUAGES=value)
    assert str(e.value).startswith("PARLEY_INTERPRETER_LANGUAGES=") and "\n" not in str(e.value)


def test_language_pair_is_normalised() -> None:
    s = Settings.load(PARLEY_INTERPRETER="1", PARLEY_INTERPRETER_LANGUAGES=" ES , en ")
    assert s.interpreter and s.interpreter_pair == ("es", "en")
    assert Settings.load().interpreter is False and Settings.load().interpreter_pair == ("en", "es")


@pytest.mark.parametrize(("text", "lang"), [
    ("Where is the train station?", "en"), ("¿Dónde está la estación de tren?", "es"),
    ("I need a doctor, please.", "en"), ("Necesito un médico, por favor.", "es"),
])
def test_typed_text_language(text: str, lang: str) -> None:
    assert guess_language(text, ("en", "es")) == lang


async def test_interpreter_translates_and_never_answers() -> None:
    settings = Settings.load(PARLEY_INTERPRETER="1")
    models = fake_models(lambda ctx: "an answer the interpreter must never give")
    translator = TaggingTranslator()
    loaded = InterpreterModels(stt=FakeSTT(), translator=translator,  # type: ignore[arg-type]
                               voices={"en": FakeTTS(), "es": FakeTTS()})
    call = Call(settings)
    session = build_session(settings, models, chosen(models), call)
    await session.start(InterpreterAgent(settings, loaded))
    try:
        await session.run(user_input="Where is the train station?")
        await session.run(user_input="¿Dónde está la estación de tren?")
    finally:
        await session.aclose()
    fake: FakeLLM = models.llm  # type: ignore[assignment]
    assert fake.seen == [], "the conversational LLM was asked"
    assert translator.asked == [("Where is the train station?", "en", "es"),
                                ("¿Dónde está la estación de tren?", "es", "en")]
    msgs = [i for i in session.history.items if i.type == "message"]
    users = [m for m in msgs if m.role == "user"]
    assert [(m.extra.get("language"), m.extra.get("translation_language")) for m in users] == [("en", "es"), ("es", "en")]
    translations = [m.text_content for m in msgs if m.role == "assistant" and m.extra.get("original")]
    assert translations == ["[es] Where is the train station?", "[en] ¿Dónde está la estación de tren?"]


def _cloud_translation(body: dict) -> Reply:
    # The fake cloud model translates by echoing the request's text, tagged with the target
    # language it read from the request (so the test sees what the cloud was sent).
    text = last_user_text(body)
    target, _, rest = text.removeprefix("Translate into ").partition(": ")
    return Reply(f"[cloud {target}] {rest}")


async def test_cloud_translation_falls_back_to_the_local_translator() -> None:
    """PARLEY_LLM=openai in interpreter mode: the cloud LLM (a local server speaking the
    chat-completions protocol) translates; when it fails (HTTP 500) the local translator
    takes over in the same turn, and the report records who translated and the fallback."""
    with OpenAIFake(reply=_cloud_translation) as fake:
        settings = Settings.load(PARLEY_INTERPRETER="1", PARLEY_LLM="openai", OPENAI_API_KEY="sk-test",
                                 OPENAI_BASE_URL=fake.base_url, PARLEY_FALLBACK="1",
                                 PARLEY_FALLBACK_TIMEOUT="2")
        translator = TaggingTranslator()
        loaded = InterpreterModels(stt=FakeSTT(), translator=translator,  # type: ignore[arg-type]
                                   voices={"en": FakeTTS(), "es": FakeTTS()})
        # As the worker loads it: in interpreter mode the local LLM is the translator.
        models = LocalModels(vad=SilentVAD(), stt=FakeSTT(), llm=loaded.translation_llm, tts=FakeTTS())  # type: ignore[arg-type]
        picked = select_models(settings, models)
        chain = picked.llm
        assert "gpt-4o-mini" in picked.providers["llm"]
        assert "fallback local" in picked.providers["llm"]
        session = build_session(settings, models, picked, Call(settings))
        await session.start(InterpreterAgent(settings, loaded, translation_llm=chain))
        try:
            await session.run(user_input="Where is the train station?")
            fake.llm_mode = "http500"
            await session.run(user_input="¿Dónde está la estación de tren?")
        finally:
            await session.aclose()
            await picked.aclose()
    sent = [last_user_text(r) for r in fake.chat_requests()]
    assert sent[0] == "Translate into Spanish: Where is the train station?", sent
    assert "Translate into English: ¿Dónde está la estación de tren?" in sent, sent
    agents = [m for m in session.history.items if m.type == "message" and m.role == "assistant"
              and m.extra.get("original")]
    assert [(m.text_content, m.extra["translated_by"]) for m in agents] == [
        ("[cloud Spanish] Where is the train station?", "cloud"),
        ("[en] ¿Dónde está la estación de tren?", "llm"),
    ]
    assert translator.asked == [("¿Dónde está la estación de tren?", "es", "en")]
    assert [(e["stage"], e["available"]) for e in picked.fallbacks.events][:1] == [("llm", False)]


def test_local_translation_needs_no_cloud() -> None:
    settings = Settings.load(PARLEY_INTERPRETER="1")
    loaded = InterpreterModels(stt=FakeSTT(), translator=TaggingTranslator(), voices={})  # type: ignore[arg-type]
    models = LocalModels(vad=SilentVAD(), stt=FakeSTT(), llm=loaded.translation_llm, tts=FakeTTS())  # type: ignore[arg-type]
    picked = select_models(settings, models)
    assert picked.llm is loaded.translation_llm and "fallback" not in picked.providers["llm"]
    assert picked.owned == []  # no cloud client for this call


@pytest.mark.parametrize(("buffer", "max_words", "cut"), [
    ("Where is the", 4, None),                       # too few words, no clause end
    ("Where is the train ", 4, len("Where is the train")),
    ("Where is the train", 4, None),                 # the last word may still grow
    ("Where is the train sta", 4, len("Where is the train")),
    ("Sí, claro. ", 4, len("Sí, claro. ")),          # "Sí," alone is too short to say apart
    ("Yes of course, the train ", 10, len("Yes of course, ")),
    ("¿Dónde está? Aquí ", 10, len("¿Dónde está? ")),
])
def test_clause_cut(buffer: str, max_words: int, cut: int | None) -> None:
    assert clause_cut(buffer, max_words) == cut


def test_stream_cleaner_gives_back_settled_words_and_drops_notes() -> None:
    c = StreamCleaner("es")
    out = [p for d in ["Span", "ish: ¿Dón", "de está ", "la estación?", "\n\nNote: formal"] for p in c.feed(d)]
    out += c.finish()
    assert "".join(out) == "¿Dónde está la estación?" == c.text
    assert out[0] == "¿Dónde "  # words went out as soon as they were whole


class StreamingTranslator(TaggingTranslator):
    """Writes its translation word by word, like the model, and notes when it finished."""

    finished_at = 0.0

    def translate_stream(self, text: str, source: str, target: str, on_piece) -> str:
        self.asked.append((text, source, target))
        words = f"[{target}] {text}".split()
        for i, w in enumerate(words):
            time.sleep(0.05)
            on_piece(w + (" " if i < len(words) - 1 else ""))
        self.finished_at = time.monotonic()
        return " ".join(words)


class TimedTTS(FakeTTS):
    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def synthesize(self, text: str, **kw):  # type: ignore[override]
        self.at.append(time.monotonic())
        return super().synthesize(text, **kw)


async def test_translation_is_spoken_while_it_is_written() -> None:
    """The first words of a translation are spoken before the model has finished it, then the
    rest clause by clause; the history keeps the whole translation, stamped as before."""
    settings = Settings.load(PARLEY_INTERPRETER="1")
    models = fake_models(lambda ctx: "never")
    translator = StreamingTranslator()
    es = TimedTTS()
    loaded = InterpreterModels(stt=FakeSTT(), translator=translator,  # type: ignore[arg-type]
                               voices={"en": FakeTTS(), "es": es})
    session = build_session(settings, models, chosen(models), Call(settings))
    out = Playout()  # speech is synthesized only for an audio output
    session.output.audio = out
    await session.start(InterpreterAgent(settings, loaded))
    try:
        await session.run(user_input="Where is the train station, and when does it open?")
    finally:
        await session.aclose()
        await out.aclose()
    said = [(text, at) for text, at in zip(es.spoken, es.at, strict=True) if text != "Intérprete listo."]
    assert [t for t, _ in said][:1] == ["[es] Where is"], es.spoken
    assert len(said) >= 3 and " ".join(t for t, _ in said) == "[es] Where is the train station, and when does it open?"
    assert said[0][1] < translator.finished_at, "the first words waited for the whole translation"
    agents = [m for m in session.history.items if m.type == "message" and m.role == "assistant"
              and m.extra.get("original")]
    assert [m.text_content for m in agents] == ["[es] Where is the train station, and when does it open?"]
    assert agents[0].extra["first_words_ms"] < agents[0].extra["translate_ms"]


async def test_interpreter_recognizes_a_tenth_of_a_second_into_the_pause() -> None:
    # As in a conversation (agent/speculative_stt.py): Whisper starts early in the pause instead
    # of once the VAD has closed the utterance, so the transcript is ready ~0.15 s sooner.
    from tests.fakes.turns import EnergyVAD
    from tests.test_speculative_stt import DurationSTT, of, run

    heard = DurationSTT()
    loaded = InterpreterModels(stt=heard, translator=TaggingTranslator(),  # type: ignore[arg-type]
                               voices={"en": FakeTTS(), "es": FakeTTS()})
    agent = InterpreterAgent(Settings.load(PARLEY_INTERPRETER="1"), loaded, vad=EnergyVAD(min_silence=0.25))
    events = await run(agent.stt, [("speech", 1.0), ("silence", 0.6)])  # type: ignore[arg-type]
    (_, final), = of(events, stt.SpeechEventType.FINAL_TRANSCRIPT)
    # The speech and ~0.1 s of the pause, not the VAD's segment with its 0.25 s of silence.
    assert 1.08 <= float(final.alternatives[0].text) <= 1.10, final
    assert agent.stt.used == 1  # type: ignore[attr-defined]  # the early run was the transcript
