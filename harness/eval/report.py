"""`report.html`: one self-contained page (inline SVG plots, inline CSS, no script, no CDN)
and `waterfall.png`, the main plot, beside it."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

from .checks import percentile
from .stages import waterfall

STAGE_COLORS = {
    "end of utterance": "#8da0cb", "STT": "#66c2a5", "LLM first token": "#fc8d62", "TTS first byte": "#e78ac3",
    "pipeline": "#c7c7c7", "transport": "#a6d854", "caller-side": "#999999",
}
MAX_WATERFALL_BARS = 150


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "parley-eval"})
    return plt


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _label(t: dict[str, Any]) -> str:
    return f"{t['scenario']} #{t['call']} t{t['turn']}"


def waterfall_figure(turns: list[dict[str, Any]]) -> Any:
    plt = _plt()
    rows = [(t, w) for t in turns if (w := waterfall(t)) is not None][:MAX_WATERFALL_BARS]
    height = max(2.2, 0.22 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    if not rows:
        ax.text(0.5, 0.5, "no answered turn", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    used: set[str] = set()
    for y, (_t, parts) in enumerate(rows):
        left = 0.0
        for stage, ms in parts.items():
            if ms <= 0:
                continue
            ax.barh(y, ms, left=left, color=STAGE_COLORS[stage], edgecolor="white", linewidth=0.4,
                    label=stage if stage not in used else None)
            used.add(stage)
            left += ms
    ax.set_yticks(range(len(rows)), [_label(t) for t, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms from the end of the caller's speech to the first agent audio heard")
    ax.set_title("Turn latency by stage (worker session reports; caller-side total where none)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def distribution_figure(turns: list[dict[str, Any]], budgets: list[dict[str, Any]]) -> Any:
    plt = _plt()
    values = [t["turn_latency_ms"] for t in turns if t.get("turn_latency_ms") is not None]
    fig, ax = plt.subplots(figsize=(9, 2.8))
    if not values:
        ax.text(0.5, 0.5, "no answered turn", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ax.hist(values, bins=min(30, max(5, len(values) // 2)), color="#8da0cb", edgecolor="white")
    for q, style in ((50, "-"), (95, "--")):
        v = percentile(values, q)
        assert v is not None
        ax.axvline(v, color="#333333", linestyle=style, linewidth=1)
        ax.text(v, ax.get_ylim()[1] * 0.95, f" p{q} {v:.0f}", fontsize=7, va="top")
    for b in budgets:
        if b["budget"].startswith("turn_latency_ms."):
            ax.axvline(b["limit"], color="#d62728" if not b["ok"] else "#2ca02c", linestyle=":", linewidth=1)
            ax.text(b["limit"], ax.get_ylim()[1] * 0.6, f" {b['scenario']} {b['budget'][16:]} budget",
                    fontsize=6, rotation=90, va="top", color="#555555")
    ax.set_xlabel("turn latency, ms (end of caller speech -> first agent audio)")
    ax.set_ylabel("turns")
    ax.set_title(f"Latency distribution ({len(values)} answered turns)")
    return fig


def capacity_figure(turns: list[dict[str, Any]]) -> Any | None:
    levels: dict[int, list[float]] = {}
    passed: dict[int, list[bool]] = {}
    for t in turns:
        n = int(t.get("active_calls") or t.get("concurrency") or 1)
        if t.get("turn_latency_ms") is not None:
            levels.setdefault(n, []).append(t["turn_latency_ms"])
        if t.get("passed") is not None:
            passed.setdefault(n, []).append(bool(t["passed"]))
    if len(levels) < 2 and max(levels or [1]) <= 1:
        return None
    plt = _plt()
    xs = sorted(levels)
    fig, ax = plt.subplots(figsize=(9, 3))
    for q, style in ((50, "o-"), (95, "s--")):
        ax.plot(xs, [percentile(levels[x], q) for x in xs], style, label=f"p{q}")
    for x in xs:
        ax.annotate(f"n={len(levels[x])}", (x, percentile(levels[x], 50) or 0), textcoords="offset points",
                    xytext=(4, -12), fontsize=7)
    ax.set_xticks(xs)
    ax.set_xlabel("calls in progress when the turn was spoken")
    ax.set_ylabel("turn latency, ms")
    ax.set_title("Capacity curve: latency against concurrent calls")
    ax2 = ax.twinx()
    ax2.plot(xs, [100 * sum(passed.get(x, [])) / max(1, len(passed.get(x, []))) for x in xs], "^:",
             color="#2ca02c", label="pass rate %")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("pass rate %")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return fig


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left}
th{background:#f4f4f4}.pass{background:#e6f4ea}.fail{background:#fde8e8}.skip{background:#fff7e0}
.num{text-align:right;font-variant-numeric:tabular-nums}.small{color:#666;font-size:12px}
svg{max-width:100%;height:auto}
"""


def _cell(v: Any, cls: str = "") -> str:
    text = "" if v is None else html.escape(str(v))
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def write_report(out: Path, results: dict[str, Any]) -> Path:
    """Write report.html and waterfall.png into `out`; returns the HTML path."""
    plt = _plt()
    turns: list[dict[str, Any]] = results["turns"]
    summary = results["summary"]
    budgets = results["budgets"]
    wf = waterfall_figure(turns)
    wf.savefig(out / "waterfall.png", dpi=110, bbox_inches="tight")
    figures = [("Per-turn latency waterfall", _svg(wf))]
    plt.close(wf)
    dist = distribution_figure(turns, budgets)
    figures.append(("Latency distribution", _svg(dist)))
    plt.close(dist)
    cap = capacity_figure(turns)
    if cap is not None:
        figures.append(("Capacity curve", _svg(cap)))
        plt.close(cap)

    def fmt(v: Any, digits: int = 0) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>parley-eval {html.escape(results['started'])}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>parley-eval report</h1><p class='small'>{html.escape(results['started'])} · transport "
             f"{html.escape(results['transport'])} · concurrency {html.escape(str(results['concurrency']))} · repeat "
             f"{results['repeat']} · agent {html.escape(results['agent'])} · commit {html.escape(results.get('commit') or 'unknown')}"
             f" · stages from {html.escape(results['stage_source'])}</p>",
             "<table><tr><th>scenarios</th><th>calls</th><th>turns</th><th>passed</th><th>failed</th><th>skipped</th>"
             "<th>pass rate</th><th>p50 ms</th><th>p95 ms</th><th>WER</th><th>greeting p50 ms</th><th>budgets</th></tr>",
             f"<tr><td class='num'>{summary['scenarios']}</td><td class='num'>{summary['calls']}</td>"
             f"<td class='num'>{summary['turns']}</td><td class='num'>{summary['passed']}</td>"
             f"<td class='num'>{summary['failed']}</td><td class='num'>{summary['skipped']}</td>"
             f"<td class='num'>{fmt(summary['pass_rate'], 3)}</td><td class='num'>{fmt(summary['p50_ms'])}</td>"
             f"<td class='num'>{fmt(summary['p95_ms'])}</td><td class='num'>{fmt(summary['wer'], 3)}</td>"
             f"<td class='num'>{fmt(summary.get('greeting_p50_ms'))}</td>"
             f"<td class='{'pass' if summary['budgets_ok'] else 'fail'}'>{'all hold' if summary['budgets_ok'] else 'BROKEN'}</td></tr></table>"]
    if budgets:
        parts.append("<h2>Budgets</h2><table><tr><th>scenario</th><th>budget</th><th>limit</th><th>measured</th><th></th></tr>")
        for b in budgets:
            parts.append(f"<tr>{_cell(b['scenario'])}{_cell(b['budget'])}<td class='num'>{b['limit']}</td>"
                         f"<td class='num'>{'n/a' if b['value'] is None else b['value']}</td>"
                         f"{_cell('holds' if b['ok'] else 'broken', 'pass' if b['ok'] else 'fail')}</tr>")
        parts.append("</table>")
    if results.get("by_scenario"):
        parts.append("<h2>Per scenario</h2><table><tr><th>scenario</th><th>calls</th><th>turns</th><th>pass rate</th>"
                     "<th>p50 ms</th><th>p95 ms</th><th>WER</th></tr>")
        for s in results["by_scenario"]:
            parts.append(f"<tr>{_cell(s['scenario'])}<td class='num'>{s['calls']}</td><td class='num'>{s['turns']}</td>"
                         f"<td class='num'>{fmt(s['pass_rate'], 3)}</td><td class='num'>{fmt(s['p50_ms'])}</td>"
                         f"<td class='num'>{fmt(s['p95_ms'])}</td><td class='num'>{fmt(s['wer'], 3)}</td></tr>")
        parts.append("</table>")
    if results.get("stage_medians"):
        parts.append("<h2>Worker stages (median ms over matched turns)</h2><table><tr>"
                     + "".join(f"<th>{html.escape(k)}</th>" for k in results["stage_medians"]) + "</tr><tr>"
                     + "".join(f"<td class='num'>{fmt(v)}</td>" for v in results["stage_medians"].values())
                     + "</tr></table>")
    for title, svg in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>{svg}")
    parts.append("<h2>Turns</h2><table><tr><th>scenario</th><th>call</th><th>turn</th><th>result</th>"
                 "<th>caller said</th><th>agent heard</th><th>agent replied</th><th>latency ms</th><th>WER</th>"
                 "<th>why</th></tr>")
    for t in turns:
        cls, word = ("skip", "skipped") if t.get("passed") is None else (("pass", "pass") if t["passed"] else ("fail", "FAIL"))
        parts.append(f"<tr class='{cls}'>{_cell(t['scenario'])}<td class='num'>{t['call']}</td>"
                     f"<td class='num'>{t['turn']}</td>{_cell(word)}{_cell(t.get('reference'))}"
                     f"{_cell(t.get('user_transcript'))}{_cell(t.get('agent_text'))}"
                     f"<td class='num'>{fmt(t.get('turn_latency_ms'))}</td><td class='num'>{fmt(t.get('wer'), 2)}</td>"
                     f"{_cell('; '.join(t.get('reasons') or []))}</tr>")
    parts.append("</table>")
    errors = [c for c in results["calls"] if c.get("error")]
    if errors:
        parts.append("<h2>Call errors</h2><ul>" + "".join(
            f"<li>{html.escape(c['scenario'])} #{c['call']} ({html.escape(c['room'])}): {html.escape(c['error'])}</li>"
            for c in errors) + "</ul>")
    parts.append("<p class='small'>results.json beside this file holds every figure; waterfall.png is the first plot.</p>"
                 "</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def merge(dirs: list[Path], out: Path) -> Path:
    """One report over several runs' results.json (e.g. `--concurrency 1`, `2` and `4` run apart):
    the capacity curve then spans every level. Budgets are not re-judged here."""
    import json

    from .cli import _summarise

    turns: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    runs = []
    for d in dirs:
        data = json.loads((d / "results.json").read_text())
        offset = len(calls)
        runs.append(f"{d.name} (concurrency {data['concurrency']}, commit {data.get('commit')})")
        for c in data["calls"]:
            calls.append({**c, "call": c["call"] + offset})
        for t in data["turns"]:
            turns.append({**t, "call": t["call"] + offset})
    summary = {**_summarise(turns), "scenarios": len({t["scenario"] for t in turns}), "calls": len(calls),
               "budgets_ok": True, "greeting_p50_ms": percentile([c["greeting_ms"] for c in calls
                                                                  if c.get("greeting_ms") is not None], 50)}
    out.mkdir(parents=True, exist_ok=True)
    results = {"started": "merged: " + "; ".join(runs), "transport": "as recorded", "concurrency": "merged",
               "repeat": 1, "agent": "as recorded", "commit": None, "stage_source": "as recorded per run",
               "summary": summary, "budgets": [], "by_scenario": [], "stage_medians": {}, "calls": calls,
               "turns": turns}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return write_report(out, results)


if __name__ == "__main__":
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m harness.eval.report",
                                 description="Merge several parley-eval output folders into one report.")
    ap.add_argument("dirs", nargs="+", type=Path, help="parley-eval --out folders (with results.json)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    try:
        print(merge(a.dirs, a.out))
    except (OSError, ValueError, KeyError) as e:
        print(f"merge: {e}", file=sys.stderr)
        sys.exit(2)
