"""Kubernetes manifests (k8s/): every overlay renders with kustomize, validates offline
against pinned Kubernetes schemas, and meets Parley's deployment policies.

`make k8s-check` runs this file and tests/test_k8s_docker.py after installing the
pinned tools (scripts/k8s-check.sh); `make test` runs them with everything else.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from harness.devstack import BIN, ROOT

K8S = ROOT / "k8s"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# Oldest and newest Kubernetes releases we support; kubernetes-validate ships their schemas.
K8S_VERSIONS = ("1.30.0", "1.37.0")
# Time a worker needs after its drain timeout: session reports, process shutdown.
SHUTDOWN_MARGIN_S = 10
# scripts/call_footprint.py on the 2-core dev box (README "Deployment"), memory in PSS
# (what the pod's cgroup is charged; RSS double-counts pages shared with the fork
# server): main process + fork server ~400 MiB, each job process with Whisper tiny.en +
# SmolLM2 + Piper loaded ~350-450 MiB; a 2-turn call averages 0.5 core and bursts to
# ~1.2 cores over 2 s (PARLEY_LLM_THREADS=1).
JOB_PROCESS_MIB = 450
WORKER_BASE_MIB = 400
MEMORY_HEADROOM = 1.25  # longer calls, bigger chat history, allocator slack
CORES_PER_CALL = 0.5
LIVEKIT_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
SECRET_VARS = (*LIVEKIT_VARS, "PARLEY_TOKEN_API_KEY", "OPENAI_API_KEY", "DEEPGRAM_API_KEY")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


@dataclass
class Rendered:
    overlay: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert found, f"{self.overlay}: no {kind} named {name!r} in the rendered manifests"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in WORKLOAD_KINDS]


def render(path: Path) -> list[dict[str, Any]]:
    kustomize = BIN / "kustomize"
    assert kustomize.exists(), f"{kustomize} is missing: run `make k8s-check` (it installs it)"
    p = subprocess.run([str(kustomize), "build", str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"kustomize build {path.relative_to(ROOT)} failed:\n{p.stderr}"
    return [d for d in yaml.safe_load_all(p.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS, ids=[p.name for p in OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param.name, render(request.param))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return workload["spec"]["template"]["spec"]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def container_env(r: Rendered, container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (ConfigMaps resolved;
    Secret values stand in as 'secret:<name>/<key>')."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            env.update(r.get("ConfigMap", src["configMapRef"]["name"]).get("data", {}))
        elif "secretRef" in src:
            name = src["secretRef"]["name"]
            secret = next((s for s in r.of_kind("Secret") if s["metadata"]["name"] == name), {})
            env.update({k: f"secret:{name}/{k}" for k in secret.get("data", {})})
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in ref:
            env[var["name"]] = f"secret:{ref['secretKeyRef']['name']}/{ref['secretKeyRef']['key']}"
        elif "configMapKeyRef" in ref:
            cm = r.get("ConfigMap", ref["configMapKeyRef"]["name"])
            env[var["name"]] = cm["data"][ref["configMapKeyRef"]["key"]]
        else:
            env[var["name"]] = f"ref:{sorted(ref)}"
    return env


def worker(r: Rendered) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    deploy = r.get("Deployment", "parley-worker")
    (c,) = pod_spec(deploy)["containers"]
    return deploy, c, container_env(r, c)


def quantity(value: str | int | float) -> float:
    """Kubernetes quantity → number (cores for CPU, MiB for memory)."""
    s = str(value)
    units = {"m": 1e-3, "Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "Ti": 1024.0**2,
             "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", s)
    assert m, f"bad quantity {value!r}"
    number, unit = float(m.group(1)), m.group(2)
    return number * units[unit] if unit else number


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# --- rendering and schemas -----------------------------------------------------------


def test_dev_and_prod_overlays_exist():
    assert {p.name for p in OVERLAYS} >= {"dev", "prod"}


def test_renders_everything_we_deploy(rendered: Rendered):
    kinds = {d["kind"] for d in rendered.docs}
    assert kinds >= {"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service",
                     "Ingress", "NetworkPolicy", "ConfigMap", "ServiceAccount", "Namespace"}, kinds
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered.docs}
    assert ("Deployment", "parley-worker") in names and ("Deployment", "parley-tokens") in names
    namespaces = {d["metadata"].get("namespace") for d in rendered.docs if d["kind"] != "Namespace"}
    (ns,) = rendered.of_kind("Namespace")
    assert namespaces == {ns["metadata"]["name"]}, "every object belongs in the overlay's namespace"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_validates_against_kubernetes_schemas(rendered: Rendered, version: str):
    errors = []
    for doc in rendered.docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator CRDs: no bundled schema; tests/test_monitoring.py checks them
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, f"{rendered.overlay} is invalid for Kubernetes {version}:\n" + "\n".join(errors)


# --- container policies --------------------------------------------------------------


def test_every_container_has_requests_limits_and_probes(rendered: Rendered):
    problems = []
    for w in rendered.workloads():
        for c in containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problems.append(f"{where}: no {kind}.{r}")
            for r in ("cpu", "memory"):
                if r in res.get("requests", {}) and r in res.get("limits", {}):
                    if quantity(res["requests"][r]) > quantity(res["limits"][r]):
                        problems.append(f"{where}: {r} request above limit")
            if c in pod_spec(w)["containers"]:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        problems.append(f"{where}: no {probe}")
    assert not problems, "\n".join(problems)


def test_probes_hit_declared_ports(rendered: Rendered):
    for w in rendered.workloads():
        for c in pod_spec(w)["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    port = c[probe]["httpGet"]["port"]
                    assert port in ports or port in ports.values(), (w["metadata"]["name"], probe, port)


def test_every_container_runs_hardened(rendered: Rendered):
    """Non-root, read-only root filesystem, no privilege escalation, no capabilities,
    default seccomp: the 'restricted' Pod Security Standard the namespaces enforce."""
    problems = []
    for w in rendered.workloads():
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{w['metadata']['name']}: pod seccompProfile is not RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{w['metadata']['name']}: mounts a service account token it does not need")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{w['metadata']['name']}: shares host namespaces")
        for c in containers(w):
            where = f"{w['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{where}: may run as root")
            if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 0) == 0:
                problems.append(f"{where}: runAsUser is root or unset")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allows privilege escalation")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"] or (sc.get("capabilities") or {}).get("add"):
                problems.append(f"{where}: does not drop ALL capabilities")
            image = c["image"]
            if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                problems.append(f"{where}: image {image!r} is not pinned to a tag or digest")
    assert not problems, "\n".join(problems)


def test_writable_paths_are_volumes(rendered: Rendered):
    """With a read-only root filesystem, every path the app writes must be a mount."""
    _, c, env = worker(rendered)
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    for var in ("PARLEY_REPORT_DIR", "PARLEY_MODEL_DIR"):
        path = env[var]
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), (var, path, mounts)
    assert "/tmp" in mounts, "multiprocessing (job processes) needs a writable /tmp"


# --- drain, autoscaling, disruption --------------------------------------------------


def test_worker_settings_load_and_drain_fits_grace_period(rendered: Rendered, monkeypatch, tmp_path):
    from agent.settings import Settings

    deploy, c, env = worker(rendered)
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings.load()  # raises SettingsError on any bad value in the ConfigMap
    assert env["PARLEY_DRAIN_TIMEOUT"] == str(settings.drain_timeout)
    grace = pod_spec(deploy)["terminationGracePeriodSeconds"]
    assert grace >= settings.drain_timeout + SHUTDOWN_MARGIN_S, (
        f"{rendered.overlay}: terminationGracePeriodSeconds {grace} < PARLEY_DRAIN_TIMEOUT "
        f"{settings.drain_timeout} + {SHUTDOWN_MARGIN_S}s: Kubernetes would SIGKILL draining calls")
    assert c["args"] == ["start"], "production mode: drains on SIGTERM (dev mode does not)"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == settings.health_port
    assert settings.idle_processes <= settings.max_calls
    assert 0 < settings.load_threshold <= 1
    # A rollout must bring new workers up before old ones start draining.
    rolling = deploy["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] not in (0, "0%")


def test_worker_resources_fit_measured_calls(rendered: Rendered, monkeypatch, tmp_path):
    from agent.settings import Settings

    _, c, env = worker(rendered)
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    calls = Settings.load().max_calls
    res = c["resources"]
    memory = quantity(res["limits"]["memory"])
    # Busy job processes, plus one idle one warming up as a call ends.
    need = round(MEMORY_HEADROOM * (WORKER_BASE_MIB + (calls + 1) * JOB_PROCESS_MIB))
    assert memory >= need, f"{rendered.overlay}: {memory:.0f} MiB < {need} MiB for {calls} calls"
    assert quantity(res["requests"]["memory"]) == memory, "memory request = limit: no OOM kill under node pressure"
    assert quantity(res["requests"]["cpu"]) >= calls * CORES_PER_CALL


def test_hpa_targets_worker_and_scales_down_patiently(rendered: Rendered, monkeypatch, tmp_path):
    from agent.settings import Settings

    (hpa,) = rendered.of_kind("HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    target = rendered.get(ref["kind"], ref["name"])  # the target exists in this overlay
    assert ref["apiVersion"] == target["apiVersion"]
    spec = hpa["spec"]
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    for m in spec["metrics"]:
        if m["type"] == "Resource":
            resource = m["resource"]["name"]
            for c in pod_spec(target)["containers"]:
                assert resource in c["resources"]["requests"], f"HPA on {resource} needs requests"
    _, _, env = worker(rendered)
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    drain = Settings.load().drain_timeout
    down = spec["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= drain, "scale-down would outpace draining pods"
    assert all(p["type"] == "Pods" and p["value"] == 1 for p in down["policies"]), "one pod at a time"
    assert down.get("selectPolicy") == "Min"


def test_disruption_budgets_cover_each_deployment(rendered: Rendered):
    pdbs = rendered.of_kind("PodDisruptionBudget")
    for d in rendered.of_kind("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(covering) == 1, f"{d['metadata']['name']}: {len(covering)} PDBs select it"


# --- configuration and secrets -------------------------------------------------------


def test_livekit_credentials_come_from_secrets(rendered: Rendered):
    for w in rendered.workloads():
        for c in containers(w):
            env = container_env(rendered, c)
            for var in SECRET_VARS:
                if var in env:
                    assert env[var].startswith("secret:"), f"{c['name']}: {var} must come from a Secret"
            for src in c.get("envFrom", []):
                assert "configMapRef" in src, "settings come from ConfigMaps; Secrets by key only"
    for cm in rendered.of_kind("ConfigMap"):
        leaked = set(cm.get("data", {})) & set(SECRET_VARS)
        assert not leaked, f"ConfigMap {cm['metadata']['name']} holds secrets: {leaked}"
    _, c, env = worker(rendered)
    assert all(env[v].startswith("secret:") for v in LIVEKIT_VARS)
    parley_vars = [k for k in env if k.startswith("PARLEY_")]
    assert parley_vars and all(not env[k].startswith("secret:") for k in parley_vars)


def test_secrets_exist_in_dev_and_stay_out_of_git_in_prod(rendered: Rendered):
    referenced = set()
    for w in rendered.workloads():
        for c in containers(w):
            for var in c.get("env", []):
                if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                    referenced.add((ref["name"], ref["key"]))
    assert referenced
    secrets = {s["metadata"]["name"]: s for s in rendered.of_kind("Secret")}
    if rendered.overlay == "prod":
        assert not secrets, "prod Secrets are created out of band, never rendered from git"
        kustomization = (K8S / "overlays" / "prod" / "kustomization.yaml").read_text()
        for name, _ in referenced:
            assert f"create secret generic {name}" in kustomization, f"document how to create {name}"
    else:
        for name, key in referenced:
            assert name in secrets and key in secrets[name]["data"], (name, key)


# --- network -------------------------------------------------------------------------


def test_network_policies(rendered: Rendered):
    policies = rendered.of_kind("NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny[0]["spec"].get("ingress") and not deny[0]["spec"].get("egress"), "default deny"

    def policies_for(name: str) -> list[dict[str, Any]]:
        labels = rendered.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        return [p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)]

    # The monitoring component adds one policy per pod kind that opens only the metrics port
    # (tests/test_monitoring.py checks it); the base policy is the one without it.
    (wp,) = [p for p in policies_for("parley-worker") if not p["metadata"]["name"].endswith("-metrics")]
    assert "Ingress" in wp["spec"]["policyTypes"] and not wp["spec"].get("ingress"), "workers accept nothing"
    egress_ports = {(p["protocol"], p["port"], p.get("endPort")) for rule in wp["spec"]["egress"]
                    for p in rule.get("ports", [])}
    assert ("UDP", 53, None) in egress_ports and ("TCP", 443, None) in egress_ports
    values = yaml.safe_load((K8S / "livekit" / "values.yaml").read_text())["livekit"]["rtc"]
    assert ("UDP", values["port_range_start"], values["port_range_end"]) in egress_ports, \
        "worker egress must cover LiveKit's media port range"

    (tp,) = [p for p in policies_for("parley-tokens") if not p["metadata"]["name"].endswith("-metrics")]
    (rule,) = tp["spec"]["ingress"]
    tokens = rendered.get("Deployment", "parley-tokens")
    port = next(p["containerPort"] for p in pod_spec(tokens)["containers"][0]["ports"] if p["name"] == "http")
    assert [p["port"] for p in rule["ports"]] == [port]
    assert all("namespaceSelector" in f for f in rule["from"]), "only the ingress controller"


def test_token_settings_load_and_pass_the_production_checks(rendered: Rendered, monkeypatch, tmp_path):
    """The token pods would start: their ConfigMap parses, the bind is production (no dev
    credentials, keys of 32+ bytes, trusted proxies named, never '*'), metrics on the port
    the container declares."""
    import base64

    from tokens.settings import TokenSettings

    deploy = rendered.get("Deployment", "parley-tokens")
    (c,) = pod_spec(deploy)["containers"]
    env = container_env(rendered, c)
    secrets = {s["metadata"]["name"]: s.get("data", {}) for s in rendered.of_kind("Secret")}
    for var, value in env.items():
        if value.startswith("secret:"):
            name, key = value.removeprefix("secret:").split("/", 1)
            if name in secrets:  # dev renders its Secrets; prod's are created out of band
                env[var] = base64.b64decode(secrets[name][key]).decode()
            elif var in LIVEKIT_VARS and var != "LIVEKIT_URL" or var == "PARLEY_TOKEN_API_KEY":
                env[var] = "x" * 40  # stands in for a real production secret
            else:
                env[var] = "wss://livekit.example.com"
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = TokenSettings.load()
    host = c["args"][c["args"].index("--host") + 1]
    settings.check_production(host)  # raises SettingsError naming the variable
    assert settings.is_production(host) and settings.trusted_proxies
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["metrics"] == settings.metrics_port and ports["http"] != settings.metrics_port


def test_token_service_is_reachable_through_service_and_ingress(rendered: Rendered):
    tokens = rendered.get("Deployment", "parley-tokens")
    labels = tokens["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in pod_spec(tokens)["containers"][0]["ports"]}
    (svc,) = [s for s in rendered.of_kind("Service") if selects({"matchLabels": s["spec"]["selector"]}, labels)]
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    assert all(p["targetPort"] in port_names for p in svc_ports.values())
    for ing in rendered.of_kind("Ingress"):
        for rule in ing["spec"]["rules"]:
            assert rule.get("host"), "an Ingress rule without host catches every hostname"
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == svc["metadata"]["name"]
                assert backend["port"]["name"] in svc_ports
    # Workers have no Service at all: nothing connects to them.
    worker_labels = rendered.get("Deployment", "parley-worker")["spec"]["template"]["metadata"]["labels"]
    assert not [s for s in rendered.of_kind("Service")
                if selects({"matchLabels": s["spec"]["selector"]}, worker_labels)]


def test_prod_ingress_terminates_tls():
    (ing,) = Rendered("prod", render(K8S / "overlays" / "prod")).of_kind("Ingress")
    hosts = {h for t in ing["spec"]["tls"] for h in t["hosts"]}
    assert {r["host"] for r in ing["spec"]["rules"]} <= hosts


# --- LiveKit server (official Helm chart) --------------------------------------------

CHART_ONLY_TURN_KEYS = ("secretName", "loadBalancerAnnotations")


@pytest.mark.parametrize("values_file", ["values.yaml", "values-dev.yaml"])
def test_livekit_helm_values_parse_with_the_real_server(values_file: str):
    """The chart writes `livekit:` as the server's config.yaml; livekit-server parses it
    strictly (unknown keys are errors). `ports` parses and prints without serving."""
    values = yaml.safe_load((K8S / "livekit" / values_file).read_text())
    config = dict(values["livekit"])
    turn = dict(config.get("turn", {}))
    for key in CHART_ONLY_TURN_KEYS:
        turn.pop(key, None)
    config["turn"] = turn
    # Needs the network (a STUN lookup) to validate; the rest is parsed as deployed.
    config["rtc"] = {**config["rtc"], "use_external_ip": False}
    binary = BIN / "livekit-server"
    assert binary.exists(), f"{binary} is missing: run `make k8s-check` (it installs it)"
    p = subprocess.run([str(binary), "ports", "--config-body", yaml.safe_dump(config)],
                       capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert "TCP Ports" in out and "could not" not in out, out
    assert f"{config['rtc']['port_range_start']}-{config['rtc']['port_range_end']}" in out
    assert values["image"]["tag"] == (ROOT / "scripts" / "install-livekit-server.sh").read_text().split(
        'VERSION="${LIVEKIT_SERVER_VERSION:-', 1)[1].split("}", 1)[0], "chart runs the server we test"


def test_livekit_helm_values_are_multi_node_with_turn():
    values = yaml.safe_load((K8S / "livekit" / "values.yaml").read_text())
    lk = values["livekit"]
    assert values["replicaCount"] >= 2 and lk["redis"]["address"], "several nodes need a shared Redis"
    assert lk["turn"]["enabled"] and lk["turn"]["tls_port"] and lk["turn"]["domain"]
    assert values["storeKeysInSecret"]["existingSecret"] and not lk.get("keys"), "keys stay out of git"
