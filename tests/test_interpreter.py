"""Interpreter mode's wiring, fast: settings, the language guess for typed text, and the
InterpreterAgent in a text-mode session with fake models (the translator stand-in tags its
output with the target language; the real models are in tests/test_interpreter_e2e.py)."""

from __future__ import annotations

import pytest

from agent.callstate import Call
from agent.interpreter import InterpreterAgent, InterpreterModels, guess_language
from agent.providers.selection import select_translation
from agent.session import build_session
from agent.settings import Settings, SettingsError
from tests.fakes.openai import OpenAIFake, Reply, last_user_text
from tests.fakes.providers import FakeLLM, FakeSTT, FakeTTS
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
        models = fake_models(lambda ctx: "an answer the interpreter must never give")
        translator = TaggingTranslator()
        loaded = InterpreterModels(stt=FakeSTT(), translator=translator,  # type: ignore[arg-type]
                                   voices={"en": FakeTTS(), "es": FakeTTS()})
        picked = chosen(models)
        chain = select_translation(settings, translator, picked)
        assert chain is not None and "gpt-4o-mini" in picked.providers["translation"]
        assert "fallback local" in picked.providers["translation"]
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
    picked = chosen(fake_models(lambda ctx: ""))
    assert select_translation(settings, TaggingTranslator(), picked) is None
    assert "translation" not in picked.providers
