"""The Kubernetes manifests: every overlay builds and passes deploy/check.py (schemas and
policy); the check catches what it must; the manifests agree with the code they run
(ports, topics, drain time) and with the network and secret rules of the design."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from postd_common import topics
from postd_common.bootstrap import ServiceSpec
from postd_common.kafka import dlq_topic
from postd_common.settings import GRPC_PORTS, METRICS_PORTS, addr_var

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CHECK = ROOT / "deploy" / "check.py"
ENVIRONMENTS = ("dev", "staging", "prod")
SERVICES = ("gateway", "connectors", "vault", "publisher", "webhook-router", "health")
CPU_SCALED = {"gateway", "connectors", "vault", "webhook-router"}
LAG_SCALED = {"publisher", "health"}
GATEWAY_PORT = 8080

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (for `kubectl kustomize`) is not installed"
)


def run_check(*overlays: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *map(str, overlays)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {env: render(K8S / "overlays" / env) for env in ENVIRONMENTS}


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"{kind}/{name} not rendered")


def config(objs: list[dict[str, Any]], name: str) -> Mapping[str, str]:
    """A generated ConfigMap's data, found by its name without the hash suffix."""
    (found,) = [
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    data: Mapping[str, str] = found["data"]
    return data


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


# --------------------------------------------------------------------------- the check


def test_every_overlay_passes_the_check() -> None:
    result = run_check()
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"deploy/k8s/overlays/{env}" for env in sorted(ENVIRONMENTS)
    ]
    assert all(": ok: " in line for line in lines)


def test_make_k8s_check_passes() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "k8s-check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok: ") == len(ENVIRONMENTS)


def broken_overlay(tmp_path: Path, kustomization: str) -> Path:
    """A copy of deploy/k8s with one more overlay, ``broken``, on top of dev."""
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlays" / "broken"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../dev\n" + kustomization
    )
    return overlay


def test_a_missing_probe_fails_the_check(tmp_path: Path) -> None:
    overlay = broken_overlay(
        tmp_path,
        """patches:
  - target: {kind: Deployment, name: vault}
    patch: |-
      - op: remove
        path: /spec/template/spec/containers/0/readinessProbe
""",
    )
    result = run_check(overlay)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{overlay}: Deployment/vault: container vault: no readinessProbe"
    ]


def test_a_latest_image_fails_the_check(tmp_path: Path) -> None:
    overlay = broken_overlay(
        tmp_path,
        """images:
  - name: registry.postd.example/postd/publisher
    newTag: latest
""",
    )
    result = run_check(overlay)
    assert result.returncode == 1
    image = "'registry.postd.example/postd/publisher:latest'"
    assert result.stdout.splitlines() == [
        f"{overlay}: Deployment/publisher: container publisher: image {image} uses the :latest tag",
        f"{overlay}: Job/publisher-migrate: container migrate: image {image} uses the :latest tag",
    ]


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        pytest.param(
            """patches:
  - target: {kind: Deployment, name: health}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/image
        value: postd/health
""",
            ["Deployment/health: container health: image 'postd/health' has no tag or digest"],
            id="untagged image",
        ),
        pytest.param(
            """patches:
  - target: {kind: Deployment, name: connectors}
    patch: |-
      - op: remove
        path: /spec/template/spec/containers/0/resources/limits
      - op: remove
        path: /spec/template/spec/containers/0/livenessProbe
      - op: replace
        path: /spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem
        value: false
""",
            [
                "Deployment/connectors: container connectors: resources not set: limits.cpu, "
                "limits.memory",
                "Deployment/connectors: container connectors: no livenessProbe",
                "Deployment/connectors: container connectors: readOnlyRootFilesystem is not true",
            ],
            id="resources, liveness, read-only root",
        ),
        pytest.param(
            """patches:
  - target: {kind: Deployment, name: gateway}
    patch: |-
      - op: remove
        path: /spec/template/spec/securityContext/runAsNonRoot
      - op: remove
        path: /spec/template/spec/containers/0/securityContext/runAsNonRoot
""",
            ["Deployment/gateway: container gateway: runAsNonRoot is not true"],
            id="root allowed",
        ),
        pytest.param(
            """patches:
  - target: {kind: NetworkPolicy, name: webhook-router}
    patch: |-
      $patch: delete
      apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata:
        name: webhook-router
  - target: {kind: PodDisruptionBudget, name: health}
    patch: |-
      $patch: delete
      apiVersion: policy/v1
      kind: PodDisruptionBudget
      metadata:
        name: health
""",
            [
                "Deployment/health: no PodDisruptionBudget selects its pods",
                "Deployment/webhook-router: no NetworkPolicy of its own selects its pods",
            ],
            id="no network policy, no PDB",
        ),
        pytest.param(
            """patches:
  - target: {kind: Deployment, name: vault}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/readinessProbe/grpcc
        value: {port: 50051}
""",
            [
                "Deployment/vault: schema: spec.template.spec.containers.0.readinessProbe: "
                "Additional properties are not allowed ('grpcc' was unexpected)"
            ],
            id="unknown field (strict schema)",
        ),
    ],
)
def test_each_policy_is_enforced(tmp_path: Path, kustomization: str, expected: list[str]) -> None:
    overlay = broken_overlay(tmp_path, kustomization)
    result = run_check(overlay)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [f"{overlay}: {line}" for line in expected]


# --------------------------------------------------------------------------- in step with code


def test_ports_and_addresses_match_the_code(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objs in rendered.values():
        common = config(objs, "postd-common")
        for svc in SERVICES:
            settings = config(objs, f"postd-{svc}")
            spec = container(find(objs, "Deployment", svc))
            service_ports = {
                p["name"]: p["port"] for p in find(objs, "Service", svc)["spec"]["ports"]
            }
            if svc == "gateway":
                metrics_port = METRICS_PORTS["gateway"]
                assert settings["POSTD_GATEWAY_PORT"] == str(GATEWAY_PORT)
                assert settings["POSTD_METRICS_LISTEN"] == f"0.0.0.0:{metrics_port}"
                assert service_ports == {"http": GATEWAY_PORT, "metrics": metrics_port}
                assert spec["livenessProbe"]["httpGet"]["path"] == "/livez"
                continue
            grpc_port, metrics_port = GRPC_PORTS[svc], METRICS_PORTS[svc]
            assert settings["POSTD_GRPC_LISTEN"] == f"0.0.0.0:{grpc_port}"
            assert settings["POSTD_METRICS_LISTEN"] == f"0.0.0.0:{metrics_port}"
            assert common[addr_var(svc)] == f"{svc}:{grpc_port}"
            assert service_ports == {"grpc": grpc_port, "metrics": metrics_port}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert spec[probe]["grpc"] == {"port": grpc_port}, (svc, probe)


def test_termination_grace_covers_the_drain(rendered: dict[str, list[dict[str, Any]]]) -> None:
    drain = ServiceSpec(name="any").drain_seconds
    for objs in rendered.values():
        for svc in SERVICES:
            deployment = find(objs, "Deployment", svc)
            pod = deployment["spec"]["template"]["spec"]
            sleep, seconds = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
            assert sleep == "sleep"
            pre_stop = int(seconds)
            # preStop, then the gRPC drain, then consumer loops and tasks, then a margin.
            assert pod["terminationGracePeriodSeconds"] > pre_stop + 2 * drain, svc


def test_every_service_has_its_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objs in rendered.values():
        for svc in SERVICES:
            for kind, name in [
                ("Deployment", svc),
                ("Service", svc),
                ("ServiceAccount", svc),
                ("PodDisruptionBudget", svc),
                ("NetworkPolicy", svc),
                ("Job", f"{svc}-migrate"),
                ("HorizontalPodAutoscaler" if svc in CPU_SCALED else "ScaledObject", svc),
            ]:
                find(objs, kind, name)
            job = container(find(objs, "Job", f"{svc}-migrate"))
            assert job["args"] == ["migrate"]
            assert job["image"] == container(find(objs, "Deployment", svc))["image"]
        assert {o["metadata"]["name"] for o in objs if o["kind"] == "ScaledObject"} == LAG_SCALED
        ingress = find(objs, "Ingress", "gateway")["spec"]
        assert ingress["tls"][0]["hosts"] == [ingress["rules"][0]["host"]]
        assert config(objs, "postd-gateway")["POSTD_PUBLIC_URL"] == (
            f"https://{ingress['rules'][0]['host']}"
        )


def test_kafka_topics_mirror_topics_py() -> None:
    objs = render(K8S / "base" / "kafka")
    wanted: dict[str, int] = {}
    for spec in topics.ALL:
        wanted[spec.name] = spec.partitions
        if not spec.name.endswith(".dlq"):
            wanted.setdefault(dlq_topic(spec.name), 1)
    declared = {o["spec"]["topicName"]: o for o in objs if o["kind"] == "KafkaTopic"}
    assert {name: o["spec"]["partitions"] for name, o in declared.items()} == wanted
    for name, obj in declared.items():
        assert obj["metadata"]["name"] == name.replace(".", "-")
        assert obj["metadata"]["labels"]["strimzi.io/cluster"] == "postd-kafka"
        assert obj["spec"]["replicas"] == 3
        assert obj["spec"]["config"]["min.insync.replicas"] == "2"
    retention = {n: int(o["spec"]["config"]["retention.ms"]) for n, o in declared.items()}
    assert min(v for n, v in retention.items() if n.endswith(".dlq")) > max(
        v for n, v in retention.items() if not n.endswith(".dlq")
    )


# --------------------------------------------------------------------------- network and secrets


def peers(rules: list[dict[str, Any]] | None, key: str) -> Iterator[dict[str, Any]]:
    for rule in rules or ():
        yield from rule.get(key) or ()


def test_network_policies_follow_the_design(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["prod"]
    policies = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy"}
    callers_of_vault = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for p in peers(policies["vault"]["ingress"], "from")
        if "podSelector" in p
    }
    # The vault contract's callers (protos/postd/vault/v1/vault.proto).
    assert callers_of_vault == {"connectors", "webhook-router", "operator"}
    internet = {
        name
        for name, spec in policies.items()
        if any(
            p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in peers(spec.get("egress"), "to")
        )
    }
    assert internet == {"connectors", "webhook-router", "health"}
    from_outside = {
        name
        for name, spec in policies.items()
        for rule in spec.get("ingress") or ()
        for p in rule.get("from") or ()
        if p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "ingress-nginx"
    }
    assert from_outside == {"gateway"}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_no_secret_is_inlined(rendered: dict[str, list[dict[str, Any]]]) -> None:
    suspicious = ("SECRET", "TOKEN", "PASSWORD", "DATABASE_URL", "PRIVATE")
    for objs in rendered.values():
        assert not [o for o in objs if o["kind"] == "Secret"]
        for obj in objs:
            if obj["kind"] == "ConfigMap":
                assert not [k for k in obj["data"] if any(s in k for s in suspicious)]
        text = yaml.safe_dump_all(objs)
        assert "BEGIN PRIVATE KEY" not in text


def test_overlays_change_only_what_must_differ() -> None:
    allowed = {"apiVersion", "kind", "namespace", "resources", "images", "configMapGenerator",
               "patches"}  # fmt: skip
    patched_kinds = {"HorizontalPodAutoscaler", "ScaledObject", "Deployment", "Ingress",
                     "ServiceAccount"}  # fmt: skip
    for env in ENVIRONMENTS:
        spec = yaml.safe_load((K8S / "overlays" / env / "kustomization.yaml").read_text())
        assert set(spec) <= allowed, env
        assert spec["resources"] == ["../../base"]
        assert {p["target"]["kind"] for p in spec["patches"]} <= patched_kinds
        assert all(g["behavior"] == "merge" for g in spec["configMapGenerator"])
