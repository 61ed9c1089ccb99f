"""Each local provider, through the livekit-agents plugin interface, on real fixtures."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import AgentStateChangedEvent, llm, tokenize
from livekit.agents import tts as tts_mod

from agent.providers import local_llm, local_stt, local_tts
from agent.settings import Settings
from harness.audio import read_wav, rms
from harness.devstack import ROOT


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.load()


@pytest.fixture(scope="module")
def whisper(settings):
    return local_stt(settings)


@pytest.fixture(scope="module")
def llama(settings):
    return local_llm(settings)


@pytest.fixture(scope="module")
def piper(settings):
    return local_tts(settings)


def frame_of(path) -> rtc.AudioFrame:
    clip = read_wav(path)
    return rtc.AudioFrame(clip.pcm.tobytes(), clip.sample_rate, 1, len(clip.pcm))


@pytest.mark.parametrize("name", ["capital_france.wav", "name_memory_1.wav", "capital_france_8k_ulaw.wav"])
async def test_whisper_transcribes_fixtures(whisper, fixtures, manifest, name):
    ev = await whisper.recognize([frame_of(fixtures / name)])
    text = ev.alternatives[0].text.lower()
    expected = [w.strip("?,.").lower() for w in manifest[name]["text"].split()]
    hits = sum(w in text for w in expected)
    assert hits >= len(expected) * 0.7, (text, expected)


_IDLE_AFTER_RECOGNITION = """
import json, sys, time
import agent  # first, as every process of ours does
from agent.audio import resample
from agent.providers import local_stt
from agent.settings import Settings
from harness.audio import read_wav
import numpy as np
whisper = local_stt(Settings.load())
clip = read_wav(sys.argv[1])
audio = resample(clip.pcm, clip.sample_rate, 16000).astype(np.float32) / 32768.0
idle = []
for _ in range(5):
    text = whisper.transcribe(audio, "en").text
    c0 = time.process_time()
    time.sleep(0.3)
    idle.append(time.process_time() - c0)
print(json.dumps({"text": text, "idle": idle}))
"""


def _idle_after_recognition(clip, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", _IDLE_AFTER_RECOGNITION, str(clip)], env={**base, **env},
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_whisper_leaves_the_cpu_alone_after_a_turn(fixtures):
    """Idle native threads that busy-wait after a recognition take the CPU from the LLM that
    starts on the transcript: numpy's OpenBLAS threads (faster-whisper's mel features) and
    CTranslate2's OpenMP threads burnt 25-50 ms each time here before agent/__init__.py and
    a single CTranslate2 thread (agent/providers/whisper_stt.py). A fresh process that imports
    `agent` first, as the worker and its job processes do; the median of five tries (quiet:
    ~0.07 ms each), so one burst of another thread can't fail it."""
    quiet = _idle_after_recognition(fixtures / "capital_france.wav")
    assert "france" in quiet["text"].lower()
    assert statistics.median(quiet["idle"]) < 0.005, quiet


@pytest.mark.parametrize("name", ["silence_5s.wav", "pink_noise_5s.wav"])
async def test_whisper_hears_nothing_in_silence_or_noise(whisper, fixtures, name):
    ev = await whisper.recognize([frame_of(fixtures / name)])
    assert ev.alternatives[0].text.strip() == ""


async def test_whisper_accepts_48k_stereo_frames(whisper, fixtures):
    clip = read_wav(fixtures / "capital_france.wav")
    up = np.repeat(clip.pcm, 3)  # crude 16k→48k; the STT must resample whatever it is given
    stereo = np.column_stack([up, up]).reshape(-1)
    ev = await whisper.recognize([rtc.AudioFrame(stereo.tobytes(), 48000, 2, len(up))])
    assert "france" in ev.alternatives[0].text.lower()


async def ask(model: llm.LLM, *turns: tuple[str, str]) -> tuple[str, float]:
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=Settings.load().instructions)
    for role, text in turns:
        ctx.add_message(role=role, content=text)
    t0 = time.perf_counter()
    first: float | None = None
    out = ""
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                first = first or time.perf_counter() - t0
                out += chunk.delta.content
    assert first is not None, "no token streamed"
    return out, first


async def test_llama_answers_capital(llama):
    out, _ = await ask(llama, ("user", "What is the capital of France?"))
    assert "paris" in out.lower()


async def test_llama_keeps_context(llama):  # the reply in the history is given, not generated
    out, _ = await ask(
        llama,
        ("user", "Hi, my name is Alice. Please remember it."),
        ("assistant", "Nice to meet you, Alice! I will remember your name."),
        ("user", "What is my name?"),
    )
    assert "alice" in out.lower()


async def test_llama_streams_tokens(llama):
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Count from one to five, please.")
    chunks = []
    async with llama.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                chunks.append(chunk.delta.content)
    assert len(chunks) > 3, chunks


def test_llama_writes_on_one_thread_and_reads_prompts_on_all(llama, settings):
    # Decoding one token a step on two OpenMP threads that sleep between the step's
    # operations was slower than on one (README, session 14); prompts gain from more.
    params = llama._llama.context_params  # what llama.cpp's context was created with
    assert (params.n_threads, params.n_threads_batch) == (1, settings.llm_threads)


async def test_llama_interrupted_stream_frees_the_model(llama):
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Tell me a long story about a dragon.")
    stream = llama.chat(chat_ctx=ctx)
    async for _ in stream:
        break
    await stream.aclose()
    out, _ = await asyncio.wait_for(ask(llama, ("user", "What is the capital of France?")), 30)
    assert "paris" in out.lower()


async def test_piper_speaks(piper):
    frames = [a.frame async for a in piper.synthesize("The capital of France is Paris.")]
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert piper.sample_rate == 22050
    assert 1.0 < len(pcm) / piper.sample_rate < 5.0
    assert rms(pcm) > 1000  # real speech energy, not silence


def test_piper_leaves_the_cpu_alone_between_pieces(piper):
    """onnxruntime's default threads busy-wait after each run (~150 ms of a core per piece here),
    which is the time the LLM writes the next piece in. CPU this process burns while idle
    right after a synthesis; the lowest of three tries, so another thread's burst can't fail it."""
    idle = []
    for _ in range(3):
        piper.synthesize_pcm("The capital of France is Paris.")
        c0 = time.process_time()
        time.sleep(0.3)
        idle.append(time.process_time() - c0)
    assert min(idle) < 0.04, idle


async def test_piper_streams_sentence_by_sentence(piper):
    """Through the framework's StreamAdapter, the first sentence plays before the rest exists."""
    adapter = tts_mod.StreamAdapter(tts=piper, sentence_tokenizer=tokenize.blingfire.SentenceTokenizer())
    stream = adapter.stream()
    text = ("Paris is the capital of France. It sits on the river Seine. "
            "Millions of people visit it every year to see its museums and monuments.")
    t0 = time.perf_counter()
    for word in text.split(" "):
        stream.push_text(word + " ")
    stream.end_input()
    first = None
    segments = set()
    async for ev in stream:
        first = first or time.perf_counter() - t0
        segments.add(ev.segment_id)
    total = time.perf_counter() - t0
    await stream.aclose()
    assert first is not None and first < total * 0.6, (first, total)


async def test_piper_reply_starts_at_its_first_sound(piper):
    frames = [a.frame async for a in piper.synthesize("Paris is the capital of France.")]
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    first_loud = int(np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)[0])
    assert first_loud / piper.sample_rate < 0.02, first_loud / piper.sample_rate


async def test_piper_stream_speaks_the_first_clause_before_the_sentence_ends(piper):
    """Its own stream: "Sure," is audio while the model is still writing the sentence."""
    stream = piper.stream()
    for word in ("Sure,", " the", " capital", " of"):
        stream.push_text(word)
    ev = await asyncio.wait_for(stream.__anext__(), 10)
    assert ev.frame.duration > 0
    audio = [ev.frame]
    stream.push_text(" France is Paris.")
    stream.end_input()
    audio += [e.frame async for e in stream]
    await stream.aclose()
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in audio])
    assert len(pcm) / piper.sample_rate > 1.0 and rms(pcm) > 1000


async def test_llama_waits_while_piper_synthesizes(llama, piper):
    """On 2 cores the LLM writing on slows the piece the caller is waiting for (agent/priority.py):
    while Piper synthesizes, no token is evaluated but the one already under way."""
    loop = asyncio.get_running_loop()
    tokens: list[float] = []
    arrived = asyncio.Event()
    stop = threading.Event()

    def on_token(_: str) -> None:
        tokens.append(time.perf_counter())
        loop.call_soon_threadsafe(arrived.set)

    async def until(done) -> None:
        while not done():
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 30)

    messages = [{"role": "user", "content": "Tell me a long story about a dragon who loves the sea."}]
    generation = loop.run_in_executor(None, lambda: llama.generate(messages, on_token, stop, max_tokens=200))
    try:
        await until(lambda: len(tokens) >= 3)
        t0 = time.perf_counter()
        frames = [a.frame async for a in piper.synthesize("The dragon flew over the mountains and the quiet valley.")]
        t1 = time.perf_counter()
        await until(lambda: any(t > t1 for t in tokens))  # and it writes on afterwards
    finally:
        stop.set()
        await generation
    during = [t for t in tokens if t0 < t < t1]
    assert sum(f.duration for f in frames) > 1.0
    assert len(during) <= 1, (len(during), round(t1 - t0, 3))


def test_piper_phrases_are_made_once_per_machine(piper, tmp_path):
    """A replacement job process reads the greeting's audio another process synthesized."""
    from agent.providers.piper_tts import PiperOptions, PiperTTS

    greeting = "Hello, this is a test line. How can I help?"
    opts = PiperOptions(model_path=piper._opts.model_path, remember=(greeting,), phrase_dir=tmp_path / "phrases")
    first = PiperTTS(opts)
    kept = sorted((tmp_path / "phrases").glob("*.pcm"))
    assert len(kept) == 3  # the whole greeting and each of its two sentences
    for path in kept:
        path.write_bytes(path.read_bytes()[:-2000])  # mark them: the next process must use these
    second = PiperTTS(opts)
    assert second.iter_pcm(greeting).__next__() == first.iter_pcm(greeting).__next__()[:-2000]
    # Nowhere to keep them (a file where the directory should be): synthesized, no error.
    (tmp_path / "blocked").write_text("")
    third = PiperTTS(PiperOptions(model_path=piper._opts.model_path, remember=(greeting,),
                                  phrase_dir=tmp_path / "blocked" / "phrases"))
    made, expected = len(third.iter_pcm(greeting).__next__()), len(first.iter_pcm(greeting).__next__())
    assert abs(made - expected) < 0.1 * expected


async def test_greeting_is_played_from_memory_and_kept_in_the_history(piper, settings):
    """The greeting's audio is the phrase remembered at load time, not synthesized again
    (in pieces, as the session's text transforms hand it over); the history keeps its text."""
    from agent.assistant import ParleyAgent
    from agent.callstate import Call
    from agent.providers import LocalModels, SessionModels
    from agent.session import build_session
    from tests.fakes.providers import FakeLLM, FakeSTT
    from tests.fakes.turns import EnergyVAD, Playout

    class Recorder(Playout):
        def __init__(self) -> None:
            super().__init__()
            self.pcm = bytearray()

        async def capture_frame(self, frame: rtc.AudioFrame) -> None:
            self.pcm += frame.data.tobytes()
            await super().capture_frame(frame)

    greeting = settings.greeting
    assert piper.remembered_frames("A sentence nobody set as a greeting.") is None
    models = LocalModels(vad=EnergyVAD(), stt=FakeSTT([]), llm=FakeLLM(lambda ctx: "Fine."), tts=piper)  # type: ignore[arg-type]
    chosen = SessionModels(stt=models.stt, llm=models.llm, tts=piper, providers={})
    session = build_session(settings, models, chosen, Call(settings))
    out = Recorder()
    session.input.audio = None
    session.output.audio = out
    await session.start(ParleyAgent(settings))
    try:
        for _ in range(200):  # bounded: until the greeting has been played
            if session.history.items and session.current_speech is None:
                break
            await asyncio.sleep(0.05)
        said = [i.text_content for i in session.history.items if i.type == "message" and i.role == "assistant"]
        assert said == [greeting]
        assert bytes(out.pcm) == piper.remembered(greeting)
        assert rms(np.frombuffer(bytes(out.pcm), dtype=np.int16)) > 1000
    finally:
        await session.aclose()
        await out.aclose()


async def converse(model, *user_turns: str) -> list[str]:
    """One conversation, turn by turn: each reply goes back into the history as the agent's."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=Settings.load().instructions)
    replies = []
    for text in user_turns:
        ctx.add_message(role="user", content=text)
        out = ""
        async with model.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    out += chunk.delta.content
        replies.append(out)
        ctx.add_message(role="assistant", content=out)
    return replies


async def test_llama_recalls_a_name_from_history_alone(llama):
    """Memory is the history the model sees: no regex, no injected 'the user's name is' note."""
    replies = await converse(llama, "Hello, I'm Tobias and I live in Leeds.", "What is the opposite of up?",
                             "What is my name?")
    assert "tobias" in replies[-1].lower(), replies


async def test_llama_next_turn_evaluates_only_what_is_new(llama):
    """Turn 2's prompt extends turn 1's tokens exactly: llama.cpp reuses its evaluated prefix."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=Settings.load().instructions)
    ctx.add_message(role="user", content="Which planet is known as the red planet?")
    reply = ""
    async with llama.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                reply += chunk.delta.content
    first = llama.last_stats
    cached_after_turn1 = llama.cached_tokens
    assert first.completion_tokens > 0 and not first.skill
    ctx.add_message(role="assistant", content=reply)
    ctx.add_message(role="user", content="And which one is the largest?")
    async with llama.chat(chat_ctx=ctx) as stream:
        async for _ in stream:
            pass
    second = llama.last_stats
    # Everything turn 1 left in the KV cache (its prompt and its reply) is a prefix of turn 2's prompt.
    assert second.reused_tokens >= first.prompt_tokens + first.completion_tokens - 1, (first, second)
    assert second.prompt_tokens > second.reused_tokens
    # llama.cpp's own counter: only the new turn's tokens were evaluated (a few framing tokens
    # plus "And which one is the largest?"), not the history.
    assert second.evaluated_tokens <= second.prompt_tokens - second.reused_tokens + 1 < 30, second
    assert cached_after_turn1 == llama.cached_tokens[: len(cached_after_turn1)]


async def test_llama_evaluates_the_next_turns_framing_once_the_reply_is_spoken(llama):
    """Once the agent has spoken a finished reply, the reply's end and the caller's header are
    already in the KV cache when the caller's next turn comes."""
    session = rtc.EventEmitter()  # what LlamaLLM.observe needs of an AgentSession: its events
    llama.observe(session)
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=Settings.load().instructions)
    ctx.add_message(role="user", content="Which ocean is the largest?")
    reply = ""
    async with llama.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                reply += chunk.delta.content
    first = llama.last_stats
    assert first.finished and not first.skill, first
    framing = llama._format.footer() + llama._format.header("user")
    session.emit("agent_state_changed", AgentStateChangedEvent(old_state="speaking", new_state="listening"))
    deadline = time.monotonic() + 10
    while llama.cached_tokens[-len(framing):] != framing:
        assert time.monotonic() < deadline, "the next turn's framing was not evaluated after the reply"
        await asyncio.sleep(0.02)
    cached = llama.cached_tokens
    assert len(cached) == first.prompt_tokens + first.completion_tokens + len(framing)
    ctx.add_message(role="assistant", content=reply)
    ctx.add_message(role="user", content="And the smallest?")
    async with llama.chat(chat_ctx=ctx) as stream:
        async for _ in stream:
            pass
    second = llama.last_stats
    assert second.reused_tokens == len(cached), (second, len(cached))


async def test_llama_evaluates_the_callers_words_while_they_talk(llama):
    """The words so far (a partial recognition) are in the KV cache when the turn ends: the
    turn evaluates only what came after them, and answers as it would have without."""

    async def reply(ctx: llm.ChatContext) -> str:
        out = ""
        async with llama.chat(chat_ctx=ctx) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    out += chunk.delta.content
        return out

    def history() -> llm.ChatContext:
        ctx = llm.ChatContext()
        ctx.add_message(role="system", content=Settings.load().instructions)
        ctx.add_message(role="user", content="Hello there.")
        ctx.add_message(role="assistant", content="Hello! How can I help you today?")
        return ctx

    question = "Which is the largest planet in our solar system?"
    ctx = history()
    ctx.add_message(role="user", content="Tell me a colour.")  # something else in the cache
    await reply(ctx)
    ctx = history()
    ctx.add_message(role="user", content=question)
    without = await reply(ctx)
    plain = llama.last_stats
    other = llm.ChatContext()
    other.add_message(role="user", content="Say yes.")
    await reply(other)  # the cache now holds another prompt from its first tokens

    evaluated = await asyncio.to_thread(llama.prefill_partial, history(), "Which is the largest planet.")
    assert evaluated > 0
    ctx = history()
    ctx.add_message(role="user", content=question)
    with_words = await reply(ctx)
    ahead = llama.last_stats
    assert with_words == without  # greedy decoding: the same prompt, the same answer
    # llama.cpp's own count: "Which is the largest planet" was already there.
    assert ahead.evaluated_tokens <= plain.evaluated_tokens - 5, (plain, ahead)
    assert ahead.reused_tokens > plain.reused_tokens


@pytest.fixture(scope="module")
def translator(settings):
    from agent import models
    from agent.providers.llama_translate import LlamaTranslator, TranslatorOptions

    return LlamaTranslator(TranslatorOptions(model_path=models.llm_gguf(
        settings.interpreter_model, settings.model_dir, "PARLEY_INTERPRETER_MODEL"), n_threads=settings.llm_threads))


def test_translator_evaluates_the_words_so_far_ahead(translator):
    """Interpreter mode: the request for the words heard so far is evaluated while the speaker
    goes on; the utterance's translation then evaluates only the rest, and is the same."""
    import llama_cpp

    def evaluated() -> int:  # llama.cpp's own count of prompt tokens evaluated
        return int(llama_cpp.llama_perf_context(translator._llm._ctx.ctx).n_p_eval)

    assert translator.ahead_ok  # our ChatML render is what llama-cpp-python's chat handler evaluated
    sentence = "Where is the nearest train station, please?"
    translator.translate("Good morning.", "en", "es")  # the cache holds another request's words
    n = evaluated()
    plain = translator.translate(sentence, "en", "es")
    plain_n = evaluated() - n
    translator.translate("Good morning.", "en", "es")
    assert translator.prefill_partial("Where is the nearest train.", "en", "es") > 0
    n = evaluated()
    ahead = translator.translate(sentence, "en", "es")
    assert ahead == plain, (ahead, plain)
    assert evaluated() - n <= plain_n - 4, (plain_n, evaluated() - n)


async def test_llama_interrupted_reply_in_history_still_answers(llama):
    """A reply cut short by the caller is kept as spoken; the next turn re-evaluates only from there."""
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content=Settings.load().instructions)
    ctx.add_message(role="user", content="Tell me a long story about a dragon.")
    spoken = ""
    stream = llama.chat(chat_ctx=ctx)
    async for chunk in stream:
        if chunk.delta and chunk.delta.content:
            spoken += chunk.delta.content
        if len(spoken.split()) >= 4:
            break
    await stream.aclose()
    prompt1 = len(llama.prompt_tokens(llama.messages(ctx)))
    ctx.add_message(role="assistant", content=" ".join(spoken.split()[:3]), interrupted=True)
    ctx.add_message(role="user", content="Stop. What is the capital of Italy?")
    out = ""
    async with llama.chat(chat_ctx=ctx) as s:
        async for chunk in s:
            if chunk.delta and chunk.delta.content:
                out += chunk.delta.content
    assert "rome" in out.lower()
    assert llama.last_stats.reused_tokens >= prompt1 - 1  # the history up to the cut reply was kept


async def test_llama_skill_answers_arithmetic_exactly(llama):
    out, _ = await ask(llama, ("user", "What is seventeen times twenty-three?"))
    assert "391" in out and llama.last_stats.skill == "arithmetic"


async def test_llama_skill_result_reaches_the_model_in_a_mixed_request(llama):
    out, _ = await ask(llama, ("user", "What is the capital of Germany, and what is nineteen plus twenty-four?"))
    assert "berlin" in out.lower() and "43" in out, out


async def test_whisper_long_turn_takes_the_30s_path(whisper, fixtures):
    """Speech longer than the short windows is still recognised whole (faster-whisper's 30 s path)."""
    clips = [read_wav(fixtures / n).pcm for n in ("capital_france.wav", "joke_computers.wav")] * 3
    audio = np.concatenate(clips).astype(np.float32) / 32768.0
    assert len(audio) / 16000 > 21
    result = await asyncio.to_thread(whisper.transcribe, audio, "en")
    assert result.window_s == 30.0
    # Both questions, each three times: the whole turn was recognised, not its first 30 s window.
    assert result.text.lower().count("capital") >= 2 and "computer" in result.text.lower(), result.text
