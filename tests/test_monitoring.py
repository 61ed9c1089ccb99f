"""Kubernetes monitoring (k8s/components/monitoring, included by the prod overlay): scrape
targets, alerts, the Grafana dashboard, the prometheus-adapter rule and the HPA on calls.

Every metric name an alert, a dashboard panel or the adapter rule uses must be one the code
exports: here against the worker's and token service's metrics as prometheus_client renders
them (no processes); tests/test_metrics_e2e.py repeats the check on a real worker's scrape.
The rules go through promtool (`make k8s-check` builds it from the Go module proxy): syntax,
and unit tests that pin each alert's threshold.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from harness.devstack import BIN

from .test_k8s import K8S, Rendered, pod_spec, render, worker

MONITORING = K8S / "components" / "monitoring"
PROMTOOL = BIN / "promtool"

# Identifiers in PromQL that are not metric names.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan",
             # aggregation operators may stand before their `by (...)`, not before "("
             "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
             "quantile", "limitk", "limit_ratio"}


def promql_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers outside label matchers, grouping
    clauses, strings, ranges and Grafana variables, that are not functions or keywords."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    s = re.sub(r"\$\{?\w+\}?", "1m", s)  # Grafana variables ($__rate_interval, ${datasource})
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def exposition_names(text: str) -> set[str]:
    """Every sample name a /metrics page can carry for the families in `text` (a labelled
    family with no series yet still names its samples by type)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("_count", "_sum", "_created")}
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(fam.name + suffix for suffix in suffixes.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names


def exported_names() -> set[str]:
    """The worker's metrics (agent/metrics.py, incl. the main process's own) and the token
    service's, rendered by prometheus_client."""
    from agent import metrics as parley_metrics  # registers the worker's metrics in REGISTRY
    from tokens.metrics import TokenMetrics

    worker_reg = CollectorRegistry()
    worker_reg.register(parley_metrics.WorkerCollector(draining=lambda: False, capacity=2, drain_timeout=300))
    text = "".join(generate_latest(r).decode() for r in (REGISTRY, worker_reg, TokenMetrics().registry))
    return {n for n in exposition_names(text) if n.startswith("parley_")}


def rule_exprs(rule: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]


def dashboard(r: Rendered) -> dict[str, Any]:
    (cm,) = [c for c in r.of_kind("ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    (body,) = cm["data"].values()
    return json.loads(body)


def dashboard_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def adapter_rules() -> list[dict[str, Any]]:
    return yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]


@pytest.fixture(scope="module")
def prod() -> Rendered:
    return Rendered("prod", render(K8S / "overlays" / "prod"))


# --- the parser the name checks rely on ------------------------------------------------------


def test_promql_names_finds_metrics_and_nothing_else():
    expr = ('histogram_quantile(0.95, sum by (le, stage) (rate(parley_turn_latency_seconds_bucket'
            '{stage="e2e", pod=~"a.*"}[$__rate_interval]))) > 1.5 and on(pod) up offset 5m '
            '/ clamp_min(sum without (instance) (parley_calls_active), 1)')
    assert promql_names(expr) == {"parley_turn_latency_seconds_bucket", "up", "parley_calls_active"}
    assert promql_names('sum(rate(x_total{a="b(c)"}[5m])) by (job)') == {"x_total"}


# --- what the prod overlay deploys -----------------------------------------------------------


def test_prod_deploys_monitoring_for_workers_and_token_service(prod: Rendered):
    monitors = prod.of_kind("PodMonitor")
    for name in ("parley-worker", "parley-tokens"):
        deploy = prod.get("Deployment", name)
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        (pm,) = [m for m in monitors if all(labels.get(k) == v for k, v in
                                            m["spec"]["selector"]["matchLabels"].items())]
        ports = {p["name"]: p["containerPort"] for c in pod_spec(deploy)["containers"] for p in c.get("ports", [])}
        for ep in pm["spec"]["podMetricsEndpoints"]:
            assert ep["port"] in ports, f"{name}: PodMonitor scrapes port {ep['port']!r}, pod has {sorted(ports)}"
            assert ep["path"] == "/metrics"
    (rule,) = prod.of_kind("PrometheusRule")
    alerts = {a for a, _ in rule_exprs(rule)}
    assert alerts >= {"ParleyTurnLatencyOverBudget", "ParleyFallbackRateHigh", "ParleyCallErrorRateHigh",
                      "ParleyWorkersAtCapacity", "ParleyDrainStuck"}, alerts
    for g in rule["spec"]["groups"]:
        for r in g["rules"]:
            assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"], r["alert"]
    dash = dashboard(prod)
    assert dash["uid"] and len(dash["panels"]) >= 8
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    namespaces = {d["metadata"].get("namespace") for d in prod.docs if d["kind"] != "Namespace"}
    assert namespaces == {"parley"}


def test_worker_serves_metrics_where_the_pod_monitor_scrapes(prod: Rendered, monkeypatch, tmp_path: Path):
    from agent.settings import Settings

    _, c, env = worker(prod)
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.load()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == s.metrics_port == 9100
    assert s.metrics_host == "0.0.0.0", "Prometheus scrapes the pod address, not its loopback"
    assert s.log_format == "json", "production logs stay JSON"
    # The scrape NetworkPolicy opens exactly the metrics port, to the monitoring namespace only.
    (np,) = [p for p in prod.of_kind("NetworkPolicy") if p["metadata"]["name"] == "parley-worker-metrics"]
    (rule,) = np["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [s.metrics_port]
    assert all("namespaceSelector" in f for f in rule["from"])


# --- names: only what the code exports -------------------------------------------------------


def test_alerts_dashboard_and_adapter_use_only_exported_names(prod: Rendered):
    exported = exported_names()
    (rule,) = prod.of_kind("PrometheusRule")
    used = [(f"alert {a}", e) for a, e in rule_exprs(rule)] + [(f"panel {t}", e) for t, e in dashboard_exprs(
        dashboard(prod))] + [("adapter", r["seriesQuery"]) for r in adapter_rules()]
    unknown = [(where, n) for where, e in used for n in promql_names(e) if n not in exported]
    assert not unknown, f"names the code does not export: {unknown}"
    assert len({n for _, e in used for n in promql_names(e)}) >= 10


# --- autoscaling on calls ----------------------------------------------------------------------


def test_hpa_scales_on_active_calls_per_pod_with_cpu_second(rendered: Rendered, monkeypatch, tmp_path: Path):
    from agent.settings import Settings

    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert list(by_type) == ["Pods", "Resource"], "calls first, CPU as the secondary signal"
    pods = by_type["Pods"]["pods"]
    assert pods["metric"]["name"] == "parley_calls_active"
    target = pods["target"]
    assert target["type"] == "AverageValue"
    _, _, env = worker(rendered)
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.load()
    per_pod = float(str(target["averageValue"]).removesuffix("m")) / (1000 if str(target["averageValue"]).endswith("m")
                                                                     else 1)
    # Scale before pods are full: at most the load threshold's share of PARLEY_MAX_CALLS.
    assert 0 < per_pod <= s.max_calls * s.load_threshold + 1e-9, (per_pod, s.max_calls, s.load_threshold)
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    # The adapter serves the HPA's metric under that name, from a series the worker exports.
    (rule,) = [r for r in adapter_rules() if r["name"]["as"] == pods["metric"]["name"]]
    assert promql_names(rule["seriesQuery"]) <= exported_names()
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, render(K8S / "overlays" / request.param))


# --- the rules through promtool ----------------------------------------------------------------

# Input series and expected alerts pinning each threshold (promtool test rules). One worker
# pod with capacity 2; `for:` durations elapse within the evaluation times.
RULE_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'parley_calls_active{pod="w-1"}'
        values: '2x30'
      - series: 'parley_worker_capacity_calls{pod="w-1"}'
        values: '2x30'
      - series: 'parley_calls_active{pod="w-2"}'
        values: '1x30'
      - series: 'parley_worker_capacity_calls{pod="w-2"}'
        values: '2x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: ParleyWorkersAtCapacity
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'parley_calls_active{pod="w-1"}'
        values: '2x30'
      - series: 'parley_worker_capacity_calls{pod="w-1"}'
        values: '2x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: ParleyWorkersAtCapacity
        exp_alerts:
          - exp_labels: {severity: warning}
  - interval: 1m
    input_series:
      - series: 'parley_worker_draining_seconds{pod="w-1"}'
        values: '0+60x20'
      - series: 'parley_worker_drain_timeout_seconds{pod="w-1"}'
        values: '300x20'
    alert_rule_test:
      - eval_time: 5m
        alertname: ParleyDrainStuck
        exp_alerts: []
      - eval_time: 9m
        alertname: ParleyDrainStuck
        exp_alerts:
          - exp_labels: {severity: warning, pod: w-1}
  - interval: 1m
    # 60 turns a minute, all between 1.5 and 2 s: p95 over budget.
    input_series:
      - series: 'parley_turn_latency_seconds_bucket{stage="e2e",le="1.5"}'
        values: '0x40'
      - series: 'parley_turn_latency_seconds_bucket{stage="e2e",le="2.0"}'
        values: '0+60x40'
      - series: 'parley_turn_latency_seconds_bucket{stage="e2e",le="+Inf"}'
        values: '0+60x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: ParleyTurnLatencyOverBudget
        exp_alerts:
          - exp_labels: {severity: warning}
  - interval: 1m
    # 95% of turns under 1.5 s: within budget.
    input_series:
      - series: 'parley_turn_latency_seconds_bucket{stage="e2e",le="1.5"}'
        values: '0+58x40'
      - series: 'parley_turn_latency_seconds_bucket{stage="e2e",le="2.0"}'
        values: '0+60x40'
      - series: 'parley_turn_latency_seconds_bucket{stage="e2e",le="+Inf"}'
        values: '0+60x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: ParleyTurnLatencyOverBudget
        exp_alerts: []
  - interval: 1m
    # 10 calls a minute, 1 in 5 with a fallback; then errors: 2 of 10 calls a minute.
    input_series:
      - series: 'parley_calls_total{outcome="caller_hangup"}'
        values: '0+8x40'
      - series: 'parley_calls_total{outcome="error"}'
        values: '0+2x40'
      - series: 'parley_fallbacks_total{stage="llm",provider="openai"}'
        values: '0+2x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: ParleyFallbackRateHigh
        exp_alerts:
          - exp_labels: {severity: warning}
      - eval_time: 30m
        alertname: ParleyCallErrorRateHigh
        exp_alerts:
          - exp_labels: {severity: critical}
  - interval: 1m
    # One error in a quiet hour is not an incident.
    input_series:
      - series: 'parley_calls_total{outcome="caller_hangup"}'
        values: '0+1x40'
      - series: 'parley_calls_total{outcome="error"}'
        values: '0x20 1x20'
    alert_rule_test:
      - eval_time: 30m
        alertname: ParleyCallErrorRateHigh
        exp_alerts: []
"""


def _promtool() -> Path:
    if not PROMTOOL.exists():
        pytest.skip(f"{PROMTOOL} not built: `make k8s-check` builds it (scripts/install-promtool.sh); "
                    "the name and structure checks above still ran")
    return PROMTOOL


def test_rules_pass_promtool_check_and_unit_tests(prod: Rendered, tmp_path: Path):
    promtool = _promtool()
    (rule,) = prod.of_kind("PrometheusRule")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([str(promtool), "check", "rules", str(tmp_path / "rules.yaml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # The unit tests pin thresholds and labels; annotations (checked above) are left out.
    groups = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
              for g in rule["spec"]["groups"]]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "tests.yaml").write_text(RULE_TESTS)
    test = subprocess.run([str(promtool), "test", "rules", str(tmp_path / "tests.yaml")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr


def test_dashboard_queries_parse_with_promtool(prod: Rendered, tmp_path: Path):
    """Panels are not rules, but a recording rule per query lets promtool parse each one."""
    promtool = _promtool()
    rules = [{"record": f"parley:panel_{i}", "expr": e.replace("$__rate_interval", "5m")}
             for i, (_, e) in enumerate(dashboard_exprs(dashboard(prod)))]
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    p = subprocess.run([str(promtool), "check", "rules", str(tmp_path / "panels.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_latency_alert_threshold_is_the_budget(prod: Rendered):
    env = dict(line.split("=", 1) for line in (K8S / "base" / "worker.env").read_text().splitlines()
               if line and not line.startswith("#"))
    budget_s = int(env["PARLEY_LATENCY_BUDGET_MS"]) / 1000
    (rule,) = prod.of_kind("PrometheusRule")
    exprs = dict(rule_exprs(rule))
    for alert in ("ParleyTurnLatencyOverBudget", "ParleyListenerLatencyOverBudget"):
        assert re.search(rf"\)\s*>\s*{budget_s}\b", exprs[alert]), (alert, exprs[alert])
    from agent.metrics import LATENCY_BUCKETS

    assert budget_s in LATENCY_BUCKETS, "the budget must be a bucket boundary for an exact quantile test"

