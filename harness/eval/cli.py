"""`parley-eval SCENARIO [SCENARIO ...]`: play scripted spoken conversations through a running
LiveKit server + worker (or LiveKit SIP), check every turn, gate on budgets, write a report.

Exit codes: 0 every budget holds (and every turn of a scenario without a pass_rate budget
passed); 1 a budget is broken or a turn failed; 2 an unreadable or invalid scenario (or bad
settings), before any call is placed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from harness.scoring import wer

from .checks import Judge, check_turn, evaluate_budgets, percentile
from .runner import ActiveCalls, CallResult, RunOptions, play_scenario
from .scenario import Scenario, ScenarioError, load_all
from .settings import EvalSettings, SettingsError
from .stages import STAGE_KEYS, attach_stages, wait_reports
from .synth import Rendered, render_scenario

REPORT_WAIT_S = 15.0  # the worker writes its report when the call's session closes


class Progress:
    """One live status line on a terminal (stderr); nothing at all when stderr is not a TTY,
    so logs and pipes never see carriage returns or escape codes."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.shown = False

    def update(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K" + text[:150])
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.live and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _levels(value: str) -> list[int]:
    try:
        levels = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or any(n < 1 or n > 64 for n in levels):
        raise argparse.ArgumentTypeError(f"{value!r}: a number of calls from 1 to 64 (or a list: 1,2,4)")
    return levels


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number of at least 1")
    return n


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="parley-eval",
        description="Run spoken evaluation scenarios against a Parley agent through a real LiveKit "
                    "server (WebRTC) or LiveKit SIP (phone), with budgets and a report.",
    )
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario YAML file(s)")
    p.add_argument("--url", help="LiveKit server URL (default: LIVEKIT_URL)")
    p.add_argument("--api-key", help="LiveKit API key (default: LIVEKIT_API_KEY)")
    p.add_argument("--api-secret", help="LiveKit API secret (default: LIVEKIT_API_SECRET)")
    p.add_argument("--agent", help="agent name to dispatch (default: the scenario's `agent`, else "
                                   "PARLEY_AGENT_NAME or 'parley')")
    p.add_argument("--transport", choices=("webrtc", "sip"), default="webrtc",
                   help="webrtc: join a room like parley-call; sip: a phone call into LiveKit SIP over "
                        "G.711 (PARLEY_SIP_PORT, PARLEY_SIP_NUMBER; the stack of `make sip-up`)")
    p.add_argument("--concurrency", type=_levels, default=[1], metavar="N",
                   help="copies of each scenario played at once (default 1); a list such as 1,2,4 "
                        "runs each level in turn for the capacity curve")
    p.add_argument("--repeat", type=_positive, default=1, metavar="N", help="run everything N times (default 1)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where results.json, report.html and waterfall.png go (default eval-output/<time>/)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: each turn, then a summary")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the agent to join or to answer a turn (default 30)")
    return p.parse_args(argv)


def _plain(o: Any) -> Any:
    """JSON for numpy scalars (audio figures); anything else as text rather than a crash."""
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _commit() -> str | None:
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if p.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return p.stdout.strip() + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "scenario"


def _summarise(turns: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [t["turn_latency_ms"] for t in turns if t.get("turn_latency_ms") is not None]
    judged = [t for t in turns if t.get("passed") is not None]
    passed = sum(1 for t in judged if t["passed"])
    wers = [t["wer"] for t in turns if t.get("wer") is not None]

    def r(v: float | None, d: int = 1) -> float | None:
        return None if v is None else round(v, d)

    return {"turns": len(turns), "passed": passed, "failed": len(judged) - passed,
            "skipped": len(turns) - len(judged),
            "pass_rate": r(passed / len(judged), 3) if judged else None,
            "p50_ms": r(percentile(lat, 50)), "p95_ms": r(percentile(lat, 95)),
            "wer": r(sum(wers) / len(wers), 3) if wers else None}


class Eval:
    def __init__(self, args: argparse.Namespace, settings: EvalSettings, scenarios: list[Scenario],
                 audio: dict[int, list[Rendered]], out: Path, judge: Judge | None) -> None:
        self.args, self.settings, self.scenarios, self.audio = args, settings, scenarios, audio
        self.out, self.judge = out, judge
        self.report_dir = Path(settings.report_dir)
        self.reports_reachable = self.report_dir.is_dir()
        self.results: list[CallResult] = []
        self.turns: list[dict[str, Any]] = []
        self.progress = Progress()
        self.active = ActiveCalls()
        self.total_calls = sum(args.concurrency) * args.repeat * len(scenarios)
        self.commit = _commit()  # at the start: what the calls ran against, not what is there at the end
        self.started_calls = 0

    def _show(self) -> None:
        lat = [t["turn_latency_ms"] for t in self.turns if t.get("turn_latency_ms") is not None]
        p50 = percentile(lat, 50)
        failed = sum(1 for t in self.turns if t.get("passed") is False)
        self.progress.update(
            f"parley-eval: call {self.started_calls}/{self.total_calls}, {self.active.n} in progress, "
            f"{len(self.turns)} turns done, {failed} failed, running p50 "
            + ("n/a" if p50 is None else f"{p50:.0f} ms"))

    def _live(self, result: CallResult, rec: dict[str, Any]) -> None:
        # While a call runs: which call, which turn (results are printed once the call is checked).
        self.progress.update(f"parley-eval: {result.scenario.name} #{result.call} turn {rec['turn']}/"
                             f"{len(result.scenario.turns)} "
                             + ("no answer" if rec.get("turn_latency_ms") is None else f"{rec['turn_latency_ms']:.0f} ms")
                             + f" · "
                             f"{self.active.n} calls in progress · call {self.started_calls}/{self.total_calls}")

    def _emit(self, rec: dict[str, Any]) -> None:
        self.progress.clear()
        if self.args.json:
            print(json.dumps(rec, default=_plain), flush=True)
        else:
            verdict = "skip" if rec["passed"] is None else ("PASS" if rec["passed"] else "FAIL")
            lat = rec.get("turn_latency_ms")
            print(f"[{rec['scenario']} #{rec['call']} turn {rec['turn']}] {verdict}"
                  f" {'no answer' if lat is None else f'{lat:.0f} ms'}"
                  f"  heard {rec.get('user_transcript')!r} -> {(rec.get('agent_text') or '')[:90]!r}"
                  + (f"  ({'; '.join(rec['reasons'])})" if rec.get("reasons") else ""), flush=True)
        self._show()

    async def _one(self, scenario: Scenario, idx: int, level: int, repeat: int) -> None:
        agent = self.args.agent or scenario.agent or self.settings.agent_name
        opts = RunOptions(url=self.args.url or self.settings.livekit_url,
                          api_key=self.args.api_key or self.settings.livekit_api_key,
                          api_secret=self.args.api_secret or self.settings.secret, agent=agent,
                          transport=self.args.transport, timeout=self.args.timeout,
                          sip_address=f"{self.settings.sip_host}:{self.settings.sip_port}",
                          sip_number=self.settings.sip_number)
        self.started_calls += 1
        result = CallResult(scenario=scenario, call=self.started_calls,
                            room=f"eval-{_slug(scenario.name)}-{secrets.token_hex(4)}",
                            transport=self.args.transport, concurrency=level, repeat=repeat)
        self.results.append(result)
        self._show()
        await play_scenario(scenario, self.audio[idx], opts, result, self.active, lambda r: self._live(result, r))
        await self._check(result)

    async def _check(self, result: CallResult) -> None:
        records = sorted(result.records, key=lambda r: r["turn"])
        if self.reports_reachable and not result.error:
            found = await asyncio.to_thread(wait_reports, self.report_dir, [result.room], REPORT_WAIT_S)
            if result.room in found:
                attach_stages(records, found[result.room])
                result_report = True
            else:
                result_report = False
        else:
            result_report = False
        by_turn = {r["turn"]: r for r in records}
        for rec in records:
            turn = result.scenario.turns[rec["turn"] - 1]
            rec["greeting_ms"] = result.greeting_ms if rec["turn"] == 1 else None
            rec["stage_source"] = "worker report" if result_report and rec.get("stages") else "caller"
            prev = by_turn.get(rec["turn"] - 1)
            if turn.barge_in_after_ms is not None and prev is not None and "report_interrupted" in prev:
                # The worker knows whether it cut its reply short; the caller only hears silence.
                rec["interrupted_caller_side"] = rec.get("interrupted")
                rec["interrupted"] = prev["interrupted"] = (prev["report_interrupted"]
                                                            and rec.get("agent_was_speaking", True))
            ref = turn.reference
            if ref and not turn.expect.no_reply and not rec.get("error"):
                rec["wer"] = round(wer(ref, rec.get("user_transcript") or ""), 3)
        for rec in records:
            turn = result.scenario.turns[rec["turn"] - 1]
            passed, reasons, judge_status = await check_turn(turn, rec, self.judge)
            rec["passed"], rec["reasons"] = passed, reasons
            if turn.judge:
                rec["judge"] = judge_status
            self.turns.append(rec)
            self._emit(rec)

    async def run(self) -> None:
        for level in self.args.concurrency:
            for repeat in range(1, self.args.repeat + 1):
                for idx, scenario in enumerate(self.scenarios):
                    await asyncio.gather(*(self._one(scenario, idx, level, repeat) for _ in range(level)))

    def finish(self, started: str) -> tuple[dict[str, Any], int]:
        self.progress.clear()
        budgets: list[dict[str, Any]] = []
        by_scenario = []
        failing_without_budget = False
        for scenario in self.scenarios:
            mine = [t for t in self.turns if t["scenario"] == scenario.name]
            budgets += evaluate_budgets(scenario.name, scenario.budgets, mine)
            if scenario.budgets.pass_rate is None and any(t.get("passed") is False for t in mine):
                failing_without_budget = True
            s = _summarise(mine)
            by_scenario.append({"scenario": scenario.name, "path": str(scenario.path),
                                "calls": len({t["call"] for t in mine}), **s})
        summary = _summarise(self.turns)
        budgets_ok = all(b["ok"] for b in budgets)
        greetings = [c.greeting_ms for c in self.results if c.greeting_ms is not None]
        stage_medians: dict[str, float] = {}
        for key in STAGE_KEYS:
            vals = [t["stages"][key] for t in self.turns if t.get("stages") and t["stages"].get(key) is not None]
            if vals:
                stage_medians[key] = round(statistics.median(vals), 1)
        report_path = self.out / "report.html"
        line = {"event": "summary", "scenarios": len(self.scenarios), "calls": len(self.results),
                "turns": summary["turns"], "passed": summary["passed"], "pass_rate": summary["pass_rate"],
                "p50_ms": summary["p50_ms"], "p95_ms": summary["p95_ms"], "wer": summary["wer"],
                "budgets_ok": budgets_ok, "report": str(report_path), "failed": summary["failed"],
                "skipped": summary["skipped"], "results": str(self.out / "results.json"),
                "greeting_p50_ms": round(statistics.median(greetings), 1) if greetings else None,
                "stages_median_ms": stage_medians, "broken_budgets": [b for b in budgets if not b["ok"]],
                "call_errors": sum(1 for c in self.results if c.error),
                "first_call_error": next((c.error for c in self.results if c.error), None)}
        code = 0 if budgets_ok and not failing_without_budget else 1
        line["exit_code"] = code
        results = {
            "started": started, "transport": self.args.transport,
            "concurrency": ",".join(str(n) for n in self.args.concurrency), "repeat": self.args.repeat,
            "agent": self.args.agent or self.settings.agent_name, "commit": self.commit,
            "stage_source": (f"worker session reports in {self.report_dir}" if self.reports_reachable
                             else "caller side only (PARLEY_REPORT_DIR not reachable)"),
            "scenarios": [{"name": s.name, "path": str(s.path)} for s in self.scenarios],
            "summary": {**summary, "scenarios": len(self.scenarios), "calls": len(self.results),
                        "budgets_ok": budgets_ok, "greeting_p50_ms": line["greeting_p50_ms"]},
            "by_scenario": by_scenario, "budgets": budgets, "stage_medians": stage_medians,
            "calls": [{"scenario": c.scenario.name, "call": c.call, "room": c.room, "transport": c.transport,
                       "concurrency": c.concurrency, "repeat": c.repeat, "greeting_ms": c.greeting_ms,
                       "greeting_text": c.greeting_text, "error": c.error, "started": c.started,
                       "ended": c.ended} for c in self.results],
            "turns": self.turns,
        }
        (self.out / "results.json").write_text(json.dumps(results, indent=1, default=_plain))
        from .report import write_report

        write_report(self.out, results)
        return line, code


def _print_summary(line: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(line, default=_plain), flush=True)
        return

    def f(v: Any, d: int = 0) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    print(f"\n== parley-eval: {line['scenarios']} scenario(s), {line['calls']} call(s), {line['turns']} turns ==")
    print(f"passed {line['passed']}, failed {line['failed']}, skipped {line['skipped']}  pass rate "
          f"{f(line['pass_rate'], 3)}")
    print(f"turn latency p50 {f(line['p50_ms'])} ms, p95 {f(line['p95_ms'])} ms; greeting p50 "
          f"{f(line['greeting_p50_ms'])} ms; WER {f(line['wer'], 3)}")
    if line["stages_median_ms"]:
        print("worker stages (median ms): " + "  ".join(f"{k.removesuffix('_ms')}={v:.0f}"
                                                        for k, v in line["stages_median_ms"].items()))
    if line["call_errors"]:
        print(f"{line['call_errors']} call(s) failed; first: {line['first_call_error']}")
    for b in line["broken_budgets"]:
        print(f"BUDGET BROKEN {b['scenario']}: {b['budget']} = {b['value']} (limit {b['limit']})")
    print(f"budgets {'hold' if line['budgets_ok'] else 'BROKEN'}; report: {line['report']}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # PyJWT warns about the dev stack's short secret on every token: noise, not progress.
    warnings.filterwarnings("ignore", module="jwt")
    try:
        settings = EvalSettings.load()
    except SettingsError as e:
        print(f"parley-eval: {e}", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("parley-eval: --timeout must be positive", file=sys.stderr)
        return 2
    judge = None
    if settings.judge_url:
        if not settings.judge_model:
            print("parley-eval: PARLEY_EVAL_JUDGE_URL is set but PARLEY_EVAL_JUDGE_MODEL is not", file=sys.stderr)
            return 2
        judge = Judge(settings.judge_url, settings.judge_model, settings.judge_key.get_secret_value())
    started = datetime.now(UTC)
    out = args.out or Path("eval-output") / started.strftime("%Y%m%d-%H%M%S")
    try:
        scenarios = load_all(args.scenarios)
        seen: dict[str, int] = {}
        for i, s in enumerate(scenarios):  # two scenarios of one name still get their own figures
            seen[s.name] = seen.get(s.name, 0) + 1
            if seen[s.name] > 1:
                scenarios[i] = replace(s, name=f"{s.name}~{seen[s.name]}")
        out.mkdir(parents=True, exist_ok=True)
        audio = {i: render_scenario(s, out / "audio" / _slug(s.name)) for i, s in enumerate(scenarios)}
    except ScenarioError as e:
        print(f"parley-eval: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"parley-eval: cannot write to {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    ev = Eval(args, settings, scenarios, audio, out, judge)
    t0 = time.monotonic()
    try:
        asyncio.run(ev.run())
    except KeyboardInterrupt:
        ev.progress.clear()
        print("parley-eval: interrupted", file=sys.stderr)
        return 130
    line, code = ev.finish(started.isoformat(timespec="seconds"))
    line["duration_s"] = round(time.monotonic() - t0, 1)
    _print_summary(line, args.json)
    return code


if __name__ == "__main__":
    sys.exit(main())
