"""Fast layer: turn-taking judgements (agent/turns.py), the end-of-turn judge's decisions
(agent/providers/turn_detector.py) and the backchannel filter (agent/barge_in.py).
No models, no processes. Sentences here are deliberately not the fixtures' sentences."""

from __future__ import annotations

import asyncio
import time

import pytest
from livekit.agents import stt
from livekit.agents.voice.events import UserInputTranscribedEvent
from livekit.agents.voice.transcription import TranscriptSynchronizer

from agent.assistant import ParleyAgent
from agent.barge_in import BackchannelFilter, filtered_stt
from agent.callstate import Call
from agent.providers import LocalModels, SessionModels
from agent.providers.turn_detector import JudgeOptions, TurnJudge
from agent.session import build_session
from agent.settings import Settings
from agent.turns import is_backchannel, transcript_verdict
from tests.fakes.providers import FakeLLM, FakeSTT, FakeTTS, last_user_text, tone_frames
from tests.fakes.turns import EnergyVAD, Playout, ScriptedMic


@pytest.mark.parametrize("text", [
    "Where is the nearest train station?",
    "How far away is the moon?",
    "Where are you from?",
    "Spell the word necessary.",
    "List three kinds of fruit.",
    "Send me the report, please.",
    "Thank you.",
    "Oh, nice to meet you.",
    "I would like to know how tall the Eiffel tower is.",
    "how long does the ferry take",   # Whisper dropped the question mark
    "Which colour did I show you?",
    "which bus goes to the airport.",  # ... or with a full stop
    "What is 12 plus 30?",             # Whisper writes numbers as digits
    "count from 1 to 4",
    "and what is 2 plus 2.",           # a discourse marker first does not make it a statement
    "Okay, so which bus goes to the airport.",
    "So, um, count from one to five.",
])
def test_questions_and_requests_are_complete(text: str) -> None:
    assert transcript_verdict(text) == "complete"


@pytest.mark.parametrize("text", [
    "Actually,",
    "So what I wanted to ask is...",
    "Give me the name of the",
    "I was looking at my",
    "Tell me about, uh",
    "Er, well, and",
    "Add 4 and",
    "Is it cheaper to go by",
    "",
    "   ",
])
def test_phrases_that_cannot_end_a_turn_are_incomplete(text: str) -> None:
    assert transcript_verdict(text) == "incomplete"


@pytest.mark.parametrize("text", [
    "One more thing.",           # a preamble: the question follows
    "I have a question.",
    "My name is Gustav.",        # may be followed by "Please remember it."
    "I would like to ask",       # Whisper left it without a full stop
    "I need to know.",           # an indirect request that does not yet say what
    "Could you show me?",        # show me ... what?
    "Tell us.",
    "Before we start",           # no full stop: Whisper heard it unfinished
    "could you please",
    "Would you please.",         # the verb is still to come, whatever the recogniser made of "would"
    "Hmm, wood you please.",
    "What I mean is",
])
def test_statements_and_unpunctuated_phrases_are_open(text: str) -> None:
    assert transcript_verdict(text) == "open"


@pytest.mark.parametrize("text", ["Uh-huh.", "Mm-hmm.", "Yeah.", "Okay.", "Right.", "Yeah, yeah.", "Ha ha.",
                                  "Oh, okay.", "Mhm.", "Sure.", "I see.", "Hmm.", "Ha."])
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["Stop.", "Wait.", "Hold on.", "No, no.", "Sorry?", "Okay, stop.", "No.", "Repeat.",
                                  "Why?", "7.", "WIT", "Stap.",
                                  "Yeah, but what about Tuesday?", "Right, how much is it?",
                                  "Okay so tell me more about the second one", ""])
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)


def transcribed(text: str) -> UserInputTranscribedEvent:
    return UserInputTranscribedEvent(transcript=text, is_final=True)


async def decide(judge: TurnJudge, *finals: str) -> tuple[float, dict]:
    """One pause: the framework asks (predict), then the pause's transcript arrives."""
    stream = judge.stream()
    fut = stream.predict()
    for text in finals:
        judge._on_transcribed(transcribed(text))
    ev = await asyncio.wait_for(fut, 5.0)
    await stream.aclose()
    return ev.end_of_turn_probability, stream.last


async def test_judge_commits_a_question_at_once():
    p, last = await decide(TurnJudge(JudgeOptions(hold_s=0.3)), "What time does the bakery open?")
    assert p == 1.0 and last["action"] == "now"


async def test_judge_waits_for_the_rest_of_a_cut_phrase():
    p, last = await decide(TurnJudge(JudgeOptions(hold_s=0.3)), "So I was thinking that,")
    assert p < 0.5 and last["action"] == "wait"


async def test_judge_holds_a_bare_statement():
    p, last = await decide(TurnJudge(JudgeOptions(hold_s=0.3)), "One more thing.")
    assert p == 1.0 and last["action"] == "hold"


async def test_judge_reads_the_whole_turn_across_pauses():
    judge = TurnJudge(JudgeOptions(hold_s=0.3))
    stream = judge.stream()
    first = stream.predict()
    judge._on_transcribed(transcribed("Before I go,"))
    assert (await asyncio.wait_for(first, 5.0)).end_of_turn_probability < 0.5
    stream.cancel_inference()  # the caller speaks again
    second = stream.predict()
    judge._on_transcribed(transcribed("which platform does the train leave from?"))
    assert (await asyncio.wait_for(second, 5.0)).end_of_turn_probability == 1.0
    assert stream.last["text"] == "Before I go, which platform does the train leave from?"
    stream.flush("turn committed")
    third = stream.predict()
    judge._on_transcribed(transcribed("And"))
    assert (await asyncio.wait_for(third, 5.0)).end_of_turn_probability < 0.5
    assert stream.last["text"] == "And"
    await stream.aclose()


async def test_new_speech_cancels_a_held_statement():
    judge = TurnJudge(JudgeOptions(hold_s=30.0))
    stream = judge.stream()
    fut = stream.predict()
    judge._on_transcribed(transcribed("One more thing."))
    await asyncio.sleep(0)  # let the judge read the transcript and start holding
    stream.cancel_inference()
    assert fut.done() and fut.result().end_of_turn_probability == 0.0
    await stream.aclose()


async def test_a_transcript_from_before_the_pause_does_not_decide_it():
    judge = TurnJudge(JudgeOptions(hold_s=0.3, transcript_wait_s=0.2))
    stream = judge.stream()
    judge._on_transcribed(transcribed("What is the time?"))  # the previous segment's words
    await asyncio.sleep(0.3)  # the caller spoke again, then paused: this pause began after them
    fut = stream.predict()
    done, _ = await asyncio.wait([fut], timeout=0.05)
    assert not done  # still waiting for this pause's transcript
    await asyncio.wait_for(fut, 5.0)
    await stream.aclose()


async def test_a_transcript_made_inside_the_pause_decides_it_at_once():
    """Whisper may finish inside the pause before the framework asks (agent/speculative_stt.py)."""
    judge = TurnJudge(JudgeOptions(hold_s=5.0, transcript_wait_s=5.0))
    stream = judge.stream()
    await asyncio.sleep(0.05)
    judge._on_transcribed(transcribed("What is the capital of France?"))  # 0.15 s into the pause
    fut = stream.predict()  # asked 0.2 s into it
    ev = await asyncio.wait_for(fut, 0.5)
    assert ev.end_of_turn_probability == 1.0 and stream.last["action"] == "now"
    await stream.aclose()


async def test_backchannel_dropped_only_while_the_agent_holds_the_floor():
    floor = {"agent": True}
    resumed: list[bool] = []
    inner = FakeSTT(["Uh-huh.", "Stop.", "", "Yeah."])
    gate = filtered_stt(inner, lambda: None)
    assert isinstance(gate, BackchannelFilter)
    gate = BackchannelFilter(inner, lambda: floor["agent"], lambda: resumed.append(True))
    frames = tone_frames(0.5)
    assert (await gate.recognize(frames)).alternatives[0].text == ""
    assert resumed == [True]  # the paused reply goes on at once
    assert (await gate.recognize(frames)).alternatives[0].text == "Stop."
    assert resumed == [True]  # "stop" does not resume it
    assert (await gate.recognize(frames)).alternatives[0].text == ""  # a cough: no words
    assert resumed == [True, True]
    floor["agent"] = False  # the agent is done: "yeah" answers it, it is a turn
    assert (await gate.recognize(frames)).alternatives[0].text == "Yeah."
    assert gate.dropped == 1


def test_streaming_stt_is_not_wrapped():
    class Streaming(FakeSTT):
        def __init__(self) -> None:
            stt.STT.__init__(self, capabilities=stt.STTCapabilities(streaming=True, interim_results=True))

    inner = Streaming()
    assert filtered_stt(inner, lambda: None) is inner


# --- the judge inside a real session: scripted audio, energy VAD, fake transcripts --------

async def user_turns(script: list[tuple[str, float]], transcripts: list[str]) -> list[str]:
    """Run a session (the worker's build_session) on `script`; the user turns it committed."""
    settings = Settings()
    models = LocalModels(vad=EnergyVAD(), stt=FakeSTT(transcripts), llm=FakeLLM(lambda ctx: "Fine."),
                         tts=FakeTTS())  # type: ignore[arg-type]
    chosen = SessionModels(stt=models.stt, llm=models.llm, tts=models.tts, providers={})
    session = build_session(settings, models, chosen, Call(settings))
    mic = ScriptedMic(script)
    session.input.audio = mic
    session.output.audio = None
    await session.start(ParleyAgent(settings, greeting=""))
    try:
        await mic.done.wait()
        committed = lambda: [i.text_content for i in session.history.items  # noqa: E731
                             if i.type == "message" and i.role == "user"]
        # Wait (bounded) for the last turn to be committed.
        for _ in range(100):
            if len(committed()) and not session.user_state == "speaking":
                break
            await asyncio.sleep(0.05)
        return committed()
    finally:
        await session.aclose()


async def test_a_comma_pause_inside_a_question_is_not_the_end_of_the_turn():
    turns = await user_turns([("silence", 0.2), ("speech", 0.8), ("silence", 1.2), ("speech", 1.0), ("silence", 1.0)],
                             ["So, before I forget,", "which platform does the train leave from?"])
    assert turns == ["So, before I forget, which platform does the train leave from?"]


async def test_a_preamble_statement_is_not_the_end_of_the_turn():
    turns = await user_turns([("silence", 0.2), ("speech", 0.8), ("silence", 1.2), ("speech", 1.0), ("silence", 1.0)],
                             ["One more thing.", "Is the museum open on Sundays?"])
    assert turns == ["One more thing. Is the museum open on Sundays?"]


async def test_a_finished_question_is_its_own_turn():
    turns = await user_turns([("silence", 0.2), ("speech", 0.8), ("silence", 1.2), ("speech", 0.6), ("silence", 1.0)],
                             ["Is the museum open on Sundays?", "Thanks."])
    assert turns[:1] == ["Is the museum open on Sundays?"], turns


REPLY = ("Pack a raincoat, boots and an umbrella. Take warm layers too, since rain feels cold. "
         "A small towel and a spare pair of socks help as well.")  # ~8 s of fake audio


async def talk_over_reply(caller_says: str) -> tuple[list[dict], list[str], float, list[float]]:
    """Ask a question, then say `caller_says` while the agent answers (a pausable,
    real-time playout hears the agent). (assistant messages, user turns, when the caller's
    words ended, when agent audio played)."""
    settings = Settings()
    models = LocalModels(vad=EnergyVAD(), stt=FakeSTT(["What should I pack for a rainy week?", caller_says]),
                         llm=FakeLLM(lambda ctx: REPLY if "pack" in last_user_text(ctx) else "Okay."),
                         tts=FakeTTS())  # type: ignore[arg-type]
    chosen = SessionModels(stt=models.stt, llm=models.llm, tts=models.tts, providers={})
    session = build_session(settings, models, chosen, Call(settings))
    # The caller talks 3.6 s after the question: past the framework's 3 s echo-cancellation
    # warm-up, which ignores a caller's voice while the agent's first speech starts
    # (in a call the greeting is that speech).
    script = [("silence", 0.2), ("speech", 0.8), ("silence", 3.6), ("speech", 0.4), ("silence", 3.5)]
    words_end = 0.2 + 0.8 + 3.6 + 0.4
    mic, out = ScriptedMic(script), Playout()
    # As in a room: the transcript is released in step with the audio played, so an
    # interrupted reply's history holds what was played (livekit's own synchronizer).
    sync = TranscriptSynchronizer(next_in_chain_audio=out, next_in_chain_text=None)
    session.input.audio = mic
    session.output.audio = sync.audio_output
    session.output.transcription = sync.text_output
    await session.start(ParleyAgent(settings, greeting=""))
    t0 = time.time()
    try:
        await mic.done.wait()
        for _ in range(200):  # bounded: until the agent has finished what it was saying
            if session.current_speech is None:
                break
            await asyncio.sleep(0.05)
        items = [i for i in session.history.items if i.type == "message"]
        assistant = [{"text": i.text_content or "", "interrupted": i.interrupted} for i in items if i.role == "assistant"]
        users = [i.text_content or "" for i in items if i.role == "user"]
        return assistant, users, t0 + words_end, out.played_at
    finally:
        await session.aclose()
        await out.aclose()


async def test_a_backchannel_while_the_agent_talks_lets_it_go_on():
    assistant, users, said_at, played = await talk_over_reply("Uh-huh.")
    assert users == ["What should I pack for a rainy week?"]  # "uh-huh" was not a turn
    assert [a["interrupted"] for a in assistant] == [False], assistant
    assert assistant[0]["text"] == REPLY
    assert any(t > said_at + 1.0 for t in played)  # the reply went on after it


async def test_stop_while_the_agent_talks_stops_it_and_keeps_only_what_was_played():
    assistant, users, said_at, played = await talk_over_reply("Stop.")
    assert users[-1] == "Stop."
    cut = assistant[0]
    assert cut["interrupted"] and REPLY.startswith(cut["text"].rstrip(".")[:10]), assistant
    assert len(cut["text"]) < len(REPLY)  # the unplayed rest is not in the history
