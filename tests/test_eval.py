"""parley-eval: scenario files, checks, WER, judge, report (fast), and real calls through a real
livekit-server + worker (e2e), including the CI smoke scenario and a phone call through LiveKit SIP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness.audio import speech_bounds
from harness.devstack import BIN, ROOT, LiveKitServer, Worker
from harness.eval import cli
from harness.eval.checks import Judge, check_turn, contains, evaluate_budgets, normalize, percentile
from harness.eval.phone import parse_sip, ulaw_decode, ulaw_encode
from harness.eval.report import write_report
from harness.eval.scenario import load_scenario
from harness.eval.synth import render_scenario
from harness.scoring import wer

from .fakes.openai import OpenAIFake, Reply, last_user_text

EVALS = ROOT / "evals"
TURN_FIELDS = {"event", "scenario", "call", "turn", "user_transcript", "agent_text", "turn_latency_ms", "passed",
               "reasons", "audio", "agent_audio_s"}
SUMMARY_FIELDS = {"event", "scenarios", "calls", "turns", "passed", "pass_rate", "p50_ms", "p95_ms", "wer",
                  "budgets_ok", "report"}


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


# --- scenario files (fast) -------------------------------------------------------------------

def test_shipped_scenarios_are_valid():
    files = sorted(EVALS.glob("*.yaml")) + [EVALS / "ci" / "smoke.yaml"]
    names = {load_scenario(f).name for f in files}
    assert {"basics", "memory", "pauses", "barge-in", "noise", "phone", "smoke"} <= names


def test_issue_example_parses(tmp_path):
    (tmp_path / "clips").mkdir()
    for f in ("question.wav", "silence.wav"):
        (tmp_path / ("clips/" + f if f == "question.wav" else f)).write_bytes(
            (EVALS / "clips" / "two_weeks.wav").read_bytes())
    p = write(tmp_path, """
        name: basics                 # required
        agent: parley
        voice: en-us+m3
        budgets:
          turn_latency_ms: {p50: 800, p95: 1500}
          pass_rate: 0.9
          wer: 0.15
        turns:
          - say: "What is the capital of Spain?"
            expect: {any: ["madrid"]}
          - audio: clips/question.wav
            expect: {all: ["one", "two", "three"]}
          - say: "I was wondering, what is the opposite of up?"
            pause_after: "wondering,"
            pause_ms: 1100
            noise: pink
            expect: {any: ["down"], silent_during_pause: true}
          - say: "Stop, stop."
            barge_in_after_ms: 700
            expect: {interrupted: true}
          - audio: silence.wav
            expect: {no_reply: true}
          - say: "Thanks."
            phone: true
            judge: "The reply is polite."
        """)
    s = load_scenario(p)
    assert s.name == "basics" and s.agent == "parley" and s.voice == "en-us+m3"
    assert s.budgets.latency_ms == {"p50": 800, "p95": 1500} and s.budgets.pass_rate == 0.9 and s.budgets.wer == 0.15
    t = s.turns
    assert t[0].expect.any == ("madrid",) and t[0].line == 9
    assert t[1].audio == (tmp_path / "clips" / "question.wav").resolve() and t[1].expect.all == ("one", "two", "three")
    assert t[2].pause_after == "wondering," and t[2].pause_ms == 1100 and t[2].noise == "pink"
    assert t[2].expect.silent_during_pause
    assert t[3].barge_in_after_ms == 700 and t[3].expect.interrupted
    assert t[4].expect.no_reply and t[5].phone and t[5].judge == "The reply is polite."


@pytest.mark.parametrize("body, line, key", [
    ("name: x\nturns:\n  - say: hi\n    expect: {anyy: [a]}\n", 4, "turns[1].expect.anyy"),
    ("turns:\n  - say: hi\n", 1, "name"),
    ("name: x\n", 1, "turns"),
    ("name: x\nturns: []\n", 2, "turns"),
    ("name: x\nturns:\n  - say: hi\n  - say: there\n    pause_after: nowhere\n", 5, "turns[2].pause_after"),
    ("name: x\nturns:\n  - say: hi\n    barge_in_after_ms: 500\n", 4, "turns[1].barge_in_after_ms"),
    ("name: x\nbudgets:\n  turn_latency_ms: {p50: fast}\nturns:\n  - say: hi\n", 3, "budgets.turn_latency_ms.p50"),
    ("name: x\nbudgets:\n  pass_rate: 1.5\nturns:\n  - say: hi\n", 3, "budgets.pass_rate"),
    ("name: x\nturns:\n  - say: hi\n    audio: a.wav\n", 3, "turns[1]"),
    ("name: x\nturns:\n  - audio: missing.wav\n", 3, "turns[1].audio"),
    ("name: x\nturns:\n  - say: hi\n    noise: purple\n", 4, "turns[1].noise"),
    ("name: x\nturns:\n  - say: hi\n    expect: {silent_during_pause: true}\n", 4, "turns[1].expect.silent_during_pause"),
    ("name: x\nturns:\n  - say: hi\n    expect: {no_reply: yes-please}\n", 4, "turns[1].expect.no_reply"),
    ("name: x\nvoice: no-such-voice-xx\nturns:\n  - say: hi\n", 2, "voice"),
])
def test_invalid_file_exits_2_naming_file_line_and_key(tmp_path, capsys, body, line, key):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    out = tmp_path / "out"
    # A closed port: had any call been attempted, the error would be a connection failure (exit 1).
    rc = cli.main([str(p), "--url", "ws://127.0.0.1:9", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"parley-eval: {p}:{line}: {key}: "), err
    assert not (out / "results.json").exists()


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    p = write(tmp_path, "name: x\nturns:\n  - say: \"unclosed\n    expect: {any: [a]}\n")
    assert cli.main([str(p)]) == 2
    err = capsys.readouterr().err
    assert re.match(rf"parley-eval: {re.escape(str(p))}:\d+: not valid YAML", err), err


def test_unreadable_file_exits_2(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert "nope.yaml: cannot read the file" in err and len(err.strip().splitlines()) == 1


def test_one_bad_file_among_good_ones_stops_everything(tmp_path, capsys):
    bad = write(tmp_path, "name: x\nturns:\n  - say: hi\n    expect: {any: []}\n", "bad.yaml")
    rc = cli.main([str(EVALS / "basics.yaml"), str(bad), "--url", "ws://127.0.0.1:9", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert f"{bad}:4: turns[1].expect.any" in capsys.readouterr().err


# --- checks, WER, budgets, judge (fast) ----------------------------------------------------------

def test_wer_and_normalisation():
    assert wer("What is the capital of Germany?", "what is the capital of germany") == 0.0
    assert wer("How many days are there in two weeks?", "How many days are in 2 weeks?") == pytest.approx(1 / 8)
    assert wer("one two three four", "one three four five") == pytest.approx(0.5)
    assert normalize("It's 14, isn't it?") == "it's fourteen isn't it"
    assert contains("A triangle has 3 sides.", "three") and contains("Fourteen days.", "14")
    assert not contains("It has four.", "three")
    assert contains("Twenty-four hours", "twenty four")


def test_percentiles_and_budgets():
    assert percentile([100, 200, 300, 400], 50) == 250
    assert percentile([100, 200, 300, 400], 100) == 400
    assert percentile([], 50) is None
    from harness.eval.scenario import Budgets

    turns = [{"turn_latency_ms": v, "passed": p, "wer": w} for v, p, w in
             [(500, True, 0.0), (700, True, 0.1), (2500, False, 0.5), (None, None, None)]]
    res = {b["budget"]: b for b in evaluate_budgets("s", Budgets({"p50": 800, "p95": 2000}, 0.6, 0.15), turns)}
    assert res["turn_latency_ms.p50"]["ok"] and res["turn_latency_ms.p50"]["value"] == 700
    assert not res["turn_latency_ms.p95"]["ok"]
    assert res["pass_rate"]["value"] == pytest.approx(0.667) and res["pass_rate"]["ok"]
    assert not res["wer"]["ok"]
    # No answered turn at all: a latency budget cannot hold.
    assert not evaluate_budgets("s", Budgets({"p50": 800}), [{"turn_latency_ms": None}])[0]["ok"]


def _turn(tmp_path: Path, body: str):
    return load_scenario(write(tmp_path, "name: x\nturns:\n  - say: hi\n" + body)).turns[-1]


async def test_expect_checks(tmp_path):
    any_turn = _turn(tmp_path, "  - say: q\n    expect: {any: [berlin, bonn]}\n")
    ok, reasons, _ = await check_turn(any_turn, {"agent_text": "It is Berlin.", "replied": True}, None)
    assert ok and not reasons
    ok, reasons, _ = await check_turn(any_turn, {"agent_text": "It is Paris.", "replied": True}, None)
    assert not ok and "none of" in reasons[0]
    all_turn = _turn(tmp_path, "  - say: q\n    expect: {all: [one, two, three]}\n")
    ok, reasons, _ = await check_turn(all_turn, {"agent_text": "1, 2 and 4", "replied": True}, None)
    assert not ok and "['three']" in reasons[0]
    quiet = _turn(tmp_path, "  - silence_ms: 1000\n    expect: {no_reply: true}\n")
    assert (await check_turn(quiet, {"replied": False}, None))[0] is True
    assert (await check_turn(quiet, {"replied": True, "agent_text": "hello?"}, None))[0] is False
    pause = _turn(tmp_path, "  - say: well then, what\n    pause_after: then,\n    expect: {silent_during_pause: true}\n")
    assert (await check_turn(pause, {"replied": True, "agent_text": "x", "spoke_during_pause_ms": None}, None))[0]
    assert not (await check_turn(pause, {"replied": True, "agent_text": "x", "spoke_during_pause_ms": 640.0}, None))[0]
    barge = _turn(tmp_path, "  - say: stop\n    barge_in_after_ms: 500\n    expect: {interrupted: true}\n")
    assert (await check_turn(barge, {"interrupted": True}, None))[0] is True
    assert (await check_turn(barge, {"interrupted": False, "barge_in_stop_ms": 3200.0}, None))[0] is False
    no_expect = _turn(tmp_path, "  - say: hello\n")
    assert (await check_turn(no_expect, {"replied": False, "agent_text": ""}, None))[1] == ["no reply"]


async def test_judge_skipped_without_endpoint(tmp_path):
    only_judge = _turn(tmp_path, "  - say: q\n    judge: polite\n")
    passed, reasons, status = await check_turn(only_judge, {"agent_text": "hello", "replied": True}, None)
    assert passed is None and status == "skipped" and "skipped" in reasons[0]
    with_expect = _turn(tmp_path, "  - say: q\n    judge: polite\n    expect: {any: [nope]}\n")
    passed, _, status = await check_turn(with_expect, {"agent_text": "hello", "replied": True}, None)
    assert passed is False and status == "skipped"


def _grader(body: dict) -> Reply:
    """Stands in for a judge model: PASS when the quoted reply names what the criterion asks for."""
    text = last_user_text(body)
    reply = re.search(r'Assistant replied: "(.*)"', text)
    wanted = re.search(r"name (\w+)", text.split("Criterion:")[-1])
    ok = bool(reply and wanted and wanted.group(1).lower() in reply.group(1).lower())
    return Reply("PASS\nIt names them." if ok else "FAIL\nThe name is missing.")


async def test_judge_against_openai_compatible_endpoint(tmp_path):
    turn = _turn(tmp_path, "  - say: what is my name\n    judge: The reply must name Victor.\n")
    with OpenAIFake(reply=_grader) as fake:
        judge = Judge(fake.base_url, "judge-model", "sk-test")
        passed, reasons, status = await check_turn(turn, {"agent_text": "Your name is Victor.", "replied": True}, judge)
        assert (passed, status) == (True, "pass"), reasons
        passed, reasons, status = await check_turn(turn, {"agent_text": "I don't know.", "replied": True}, judge)
        assert (passed, status) == (False, "fail") and "name is missing" in reasons[0]
        body = fake.chat_requests()[0]
        assert body["model"] == "judge-model"
        assert "The reply must name Victor." in last_user_text(body)
        assert fake.requests[0].headers.get("Authorization") == "Bearer sk-test"
        fake.llm_mode = "http500"
        passed, reasons, status = await check_turn(turn, {"agent_text": "Victor", "replied": True}, judge)
        assert passed is False and status == "error" and "HTTP 500" in reasons[0]
    unreachable = Judge("http://127.0.0.1:9/v1", "m")
    passed, reasons, status = await check_turn(turn, {"agent_text": "Victor", "replied": True}, unreachable)
    assert passed is False and "unreachable" in reasons[0]


# --- audio synthesis (espeak-ng + sox, fast) ----------------------------------------------------

def test_synthesis_pause_noise_phone(tmp_path):
    p = write(tmp_path, """
        name: synth
        voice: en-us
        turns:
          - say: "I was wondering, what is the opposite of up?"
            pause_after: "wondering,"
            pause_ms: 1100
          - say: "What is two plus two?"
            noise: pink
          - say: "What is two plus two?"
            phone: true
          - silence_ms: 1500
        """)
    s = load_scenario(p)
    paused, noisy, phone, silent = render_scenario(s, tmp_path / "audio")
    assert paused.pause_s is not None
    a, b = paused.pause_s
    assert b - a == pytest.approx(1.1)
    rate = paused.clip.sample_rate
    gap = paused.clip.pcm[int(a * rate) + 1: int(b * rate) - 1]
    assert np.abs(gap).max() == 0  # digital silence exactly where the scenario put the pause
    before, after = paused.clip.pcm[: int(a * rate)], paused.clip.pcm[int(b * rate):]
    assert speech_bounds(before, rate) and speech_bounds(after, rate)
    assert noisy.clip.sample_rate == 16000 and np.abs(noisy.clip.pcm[:1000]).max() > 0  # noise under the lead-in
    head = phone.clip.path.read_bytes()[:40]
    assert phone.clip.sample_rate == 8000 and head[20:22] == b"\x07\x00"  # WAVE format 7 = G.711 µ-law
    assert silent.clip.duration_s == pytest.approx(1.5) and speech_bounds(silent.clip.pcm, silent.clip.sample_rate) is None


def test_ulaw_codec_round_trip():
    codes = bytes(range(256))
    pcm = ulaw_decode(codes)
    again = ulaw_encode(pcm)
    # 0x7F and 0xFF both decode to 0; every other code survives decode -> encode.
    assert all(x == y or {x, y} == {0x7F, 0xFF} for x, y in zip(codes, again, strict=True))
    tone = (8000 * np.sin(np.arange(800) / 5)).astype(np.int16)
    err = np.abs(ulaw_decode(ulaw_encode(tone)).astype(int) - tone.astype(int))
    assert err.max() < 300


def test_sip_message_parsing():
    first, headers, body = parse_sip("SIP/2.0 200 OK\r\nVia: a\r\nv: b\r\nCall-ID: x@y\r\nl: 4\r\n\r\nv=0\n")
    assert first == "SIP/2.0 200 OK" and headers["via"] == ["a", "b"] and headers["call-id"] == ["x@y"]
    assert body == "v=0\n"


# --- report (fast) ----------------------------------------------------------------------------

def test_report_is_self_contained_with_plots(tmp_path):
    turns = []
    for call in (1, 2):
        for turn in (1, 2):
            turns.append({"scenario": "s", "call": call, "turn": turn, "reference": "What <b>is</b> it?",
                          "user_transcript": "what is it", "agent_text": "It is <script>x</script>",
                          "turn_latency_ms": 900.0 + 100 * call + turn, "passed": turn == 1,
                          "reasons": [] if turn == 1 else ["reply has none of ['x']"], "wer": 0.0,
                          "active_calls": call,
                          "stages": {"end_of_utterance_delay_ms": 400, "stt_duration_ms": 150, "llm_ttft_ms": 120,
                                     "tts_ttfb_ms": 90, "e2e_latency_ms": 700} if call == 1 else None})
    results = {"started": "now", "transport": "webrtc", "concurrency": "2", "repeat": 1, "agent": "parley",
               "commit": "abc", "stage_source": "x", "turns": turns, "calls": [],
               "summary": {"scenarios": 1, "calls": 2, "turns": 4, "passed": 2, "failed": 2, "skipped": 0,
                           "pass_rate": 0.5, "p50_ms": 1050.0, "p95_ms": 1100.0, "wer": 0.0, "budgets_ok": False},
               "budgets": [{"scenario": "s", "budget": "turn_latency_ms.p50", "limit": 800, "value": 1050, "ok": False}],
               "by_scenario": [], "stage_medians": {"llm_ttft_ms": 120}}
    path = write_report(tmp_path, results)
    page = path.read_text()
    assert page.count("<svg") == 3  # waterfall, distribution, capacity curve (two concurrency levels)
    assert not re.search(r"""(src|href)=["']?https?:""", page) and "<script>" not in page
    assert "&lt;script&gt;" in page and "LLM first token" in page and "Capacity curve" in page
    assert (tmp_path / "waterfall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_is_silent_when_not_a_tty(capsys):
    p = cli.Progress(sys.stderr)
    p.update("call 1/2")
    p.clear()
    assert capsys.readouterr().err == ""


# --- real calls (e2e) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_stack(out_dir: Path) -> Iterator[tuple[LiveKitServer, Path]]:
    server = LiveKitServer.create().start(out_dir / "logs")
    reports = out_dir / "eval-reports"
    reports.mkdir(exist_ok=True)
    # Two warm processes and a spare call slot: the --concurrency 2 test starts right after another
    # call, while the worker may still count that one's job.
    worker = Worker(env={**server.env(), "PARLEY_REPORT_DIR": str(reports), "PARLEY_LOAD_CPU": "0",
                         "PARLEY_IDLE_PROCESSES": "2", "PARLEY_MAX_CALLS": "3"})
    worker.start(out_dir / "logs", name="eval-worker")
    yield server, reports
    worker.stop()
    server.stop()


def run_eval(server: LiveKitServer, reports: Path | None, *args: str, env: dict[str, str] | None = None,
             timeout: float = 400) -> tuple[int, list[dict], str]:
    e = {**os.environ, **server.env(), **(env or {})}
    e["PARLEY_REPORT_DIR"] = str(reports) if reports else "/nonexistent-report-dir"
    p = subprocess.run([str(BIN / "parley-eval"), "--json", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=e)
    sys.stderr.write(p.stdout + p.stderr)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, lines, p.stderr


@pytest.mark.e2e
def test_ci_smoke_scenario(eval_stack, tmp_path):
    """What CI runs so the tool cannot rot: the shipped smoke scenario, exit 0, a full report."""
    server, reports = eval_stack
    rc, lines, err = run_eval(server, reports, str(EVALS / "ci" / "smoke.yaml"), "--out", str(tmp_path))
    assert not any(line.startswith("\r") or "\x1b[" in line for line in err.splitlines())  # not a TTY: no progress
    summary = lines[-1]
    assert summary["event"] == "summary" and SUMMARY_FIELDS <= set(summary), summary
    turns = [x for x in lines if x["event"] == "turn"]
    assert len(turns) == 2 and all(TURN_FIELDS <= set(t) for t in turns)
    assert rc == 0, summary
    assert turns[0]["turn_latency_ms"] is not None and turns[0]["agent_text"]
    assert turns[0]["stages"]["e2e_latency_ms"] is not None  # matched to the worker's session report
    assert turns[1]["passed"] is True and turns[1]["replied"] is False  # silence: no reply
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["summary"]["turns"] == 2 and results["stage_medians"]["llm_ttft_ms"] > 0
    assert summary["report"] == str(tmp_path / "report.html")
    assert "<svg" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "waterfall.png").stat().st_size > 1000


@pytest.mark.e2e
def test_every_expect_kind_in_a_real_call(eval_stack, tmp_path):
    server, reports = eval_stack
    scenario = write(tmp_path, f"""
        name: kinds
        voice: en-us+m3
        rate: 165
        turns:
          - say: "Please tell me, which city is the capital of Germany?"
            pause_after: "tell me,"
            pause_ms: 900
            expect: {{any: ["berlin"], silent_during_pause: true}}
          - audio: {EVALS / "clips" / "two_weeks.wav"}
            text: "How many days are there in two weeks?"
            expect: {{all: ["fourteen", "zebra-xylophone"]}}
          - say: "Can you describe, in a few sentences, how a bicycle works?"
            judge: "The reply names Victor."
          - say: "Wait, stop please."
            barge_in_after_ms: 1200
            expect: {{interrupted: true}}
          - silence_ms: 3000
            expect: {{no_reply: true}}
        """)
    with OpenAIFake(reply=_grader) as judge:
        rc, lines, _ = run_eval(server, reports, str(scenario), "--out", str(tmp_path / "out"),
                                env={"PARLEY_EVAL_JUDGE_URL": judge.base_url,
                                     "PARLEY_EVAL_JUDGE_MODEL": "grader"})
        judged = judge.chat_requests()
    t = {x["turn"]: x for x in lines if x["event"] == "turn"}
    assert sorted(t) == [1, 2, 3, 4, 5]
    # any + silent_during_pause: the verdict follows what was heard
    assert t[1]["passed"] == (contains(t[1]["agent_text"], "berlin") and t[1]["spoke_during_pause_ms"] is None)
    assert t[1]["wer"] is not None and t[1]["user_transcript"]
    # all: a word no answer contains makes the turn fail, naming it
    assert t[2]["passed"] is False and any("zebra-xylophone" in r for r in t[2]["reasons"])
    # judge: asked with the real reply; the criterion cannot hold for a bicycle answer
    assert judged and t[3]["judge"] == "fail" and t[3]["passed"] is False
    assert t[3]["agent_text"] in last_user_text(judged[0])
    # interrupted: the agent was talking and stopped (the worker's report agrees)
    assert t[4]["passed"] is True, t[4]
    assert t[4]["barge_in_stop_ms"] is not None and t[3]["interrupted"] is True
    # no_reply after the interruption
    assert t[5]["passed"] is True and t[5]["replied"] is False
    assert rc == 1  # turn 2 failed and the scenario has no pass_rate budget


@pytest.mark.e2e
def test_concurrency_two_and_a_budget_that_cannot_hold(eval_stack, tmp_path):
    server, _ = eval_stack
    scenario = write(tmp_path, """
        name: impossible
        budgets:
          turn_latency_ms: {p50: 1}
        turns:
          - say: "How many legs does a cat have?"
        """)
    out = tmp_path / "out"
    # No report directory reachable: caller-side figures only, and still a full report.
    rc, lines, _ = run_eval(server, None, str(scenario), "--concurrency", "2", "--out", str(out))
    summary = lines[-1]
    assert rc == 1 and summary["budgets_ok"] is False
    assert [b["budget"] for b in summary["broken_budgets"]] == ["turn_latency_ms.p50"]
    assert summary["calls"] == 2
    results = json.loads((out / "results.json").read_text())
    assert len(results["calls"]) == 2 and len({c["room"] for c in results["calls"]}) == 2
    assert {t["call"] for t in results["turns"]} == {1, 2}
    assert all("stages" not in t for t in results["turns"]) and "caller side only" in results["stage_source"]
    assert max(t["active_calls"] for t in results["turns"]) == 2
    page = (out / "report.html").read_text()
    assert "impossible #1" in page and "impossible #2" in page and "Capacity curve" in page


# --- a phone call through LiveKit SIP (e2e) -------------------------------------------------------

@pytest.mark.e2e
def test_phone_transport_through_livekit_sip(out_dir, tmp_path):
    from harness.sipstack import SipStack

    stack = SipStack.start(out_dir / "logs")
    worker = None
    try:
        server = stack.server
        assert isinstance(server, LiveKitServer) and stack.sip is not None
        env = {**server.env(), "PARLEY_SIP_PORT": str(stack.sip.sip_port)}
        setup = subprocess.run([str(BIN / "parley-sip"), "setup", "--json"], env={**os.environ, **env},
                               capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert setup.returncode == 0, setup.stderr
        reports = tmp_path / "reports"
        reports.mkdir()
        worker = Worker(env={**env, "PARLEY_REPORT_DIR": str(reports), "PARLEY_LOAD_CPU": "0"})
        worker.start(out_dir / "logs", name="eval-sip-worker")
        scenario = write(tmp_path, """
            name: phone-call
            voice: en-us
            turns:
              - say: "What is the capital of Germany?"
              - say: "How many days are in a week?"
            """)
        rc, lines, err = run_eval(server, reports, str(scenario), "--transport", "sip", "--out", str(tmp_path / "o"),
                                  env={"PARLEY_SIP_PORT": str(stack.sip.sip_port)})
        turns = [x for x in lines if x["event"] == "turn"]
        assert len(turns) == 2, err
        for t in turns:
            assert t["transport"] == "sip" and t["room"].startswith("call-")
            assert t["replied"] and t["turn_latency_ms"] is not None and t["agent_text"], t
            assert t["user_transcript"]  # the agent's transcript of the caller, read from the room
        assert turns[0]["stages"]["e2e_latency_ms"] is not None
        report = json.loads(next(reports.glob(f"{turns[0]['room']}-*.json")).read_text())
        assert "phone" in report  # the worker saw a phone call, not a WebRTC participant
    finally:
        if worker is not None:
            worker.stop()
        stack.stop()



def test_merge_runs_into_one_capacity_curve(tmp_path):
    from harness.eval.report import merge

    for level in (1, 2):
        d = tmp_path / f"c{level}"
        d.mkdir()
        turns = [{"scenario": "s", "call": c, "turn": 1, "turn_latency_ms": 800.0 * level + c, "passed": True,
                  "reasons": [], "active_calls": level} for c in range(1, level + 1)]
        (d / "results.json").write_text(json.dumps({
            "concurrency": str(level), "commit": "abc", "turns": turns,
            "calls": [{"scenario": "s", "call": c, "room": f"r{level}{c}", "greeting_ms": 500.0, "error": None}
                      for c in range(1, level + 1)]}))
    page = merge([tmp_path / "c1", tmp_path / "c2"], tmp_path / "merged").read_text()
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert [t["call"] for t in merged["turns"]] == [1, 2, 3]  # calls renumbered, none collide
    assert merged["summary"]["turns"] == 3 and merged["summary"]["p50_ms"] == pytest.approx(1601.0)
    assert "Capacity curve" in page and page.count("<svg") == 3
