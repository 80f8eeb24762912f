"""Build every kustomize overlay and check what it would apply.

    python deploy/check.py [OVERLAY_DIR ...]     (default: every deploy/k8s/overlays/*)

Each overlay is built with ``kubectl kustomize`` and every object is checked twice:

* against the Kubernetes JSON schemas of ``KUBERNETES_VERSION``, offline and strict
  (unknown fields are errors), with ``kubernetes-validate``. The Prometheus Operator's
  ``PrometheusRule`` and ``ServiceMonitor`` are checked against the local schemas in
  ``deploy/crds/`` (the CRD fields this repository uses, strict), and every rule
  expression must parse as PromQL. Other custom resources (Strimzi ``KafkaTopic``,
  KEDA ``ScaledObject``, ``ExternalSecret``) skip this step only;
* against POSTD's own policy (``policy_problems``): pinned images, resources, probes,
  a locked-down security context, a NetworkPolicy and a PodDisruptionBudget for every
  workload.

Prints one line per violation, ``<overlay>: <Kind>/<name>: <problem>``, and exits 1
if there is any; otherwise one summary line per overlay and exit 0. Exit 2 when an
overlay does not build at all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"

# The oldest Kubernetes minor version the manifests must be valid for (gRPC probes are
# GA since 1.27; the clusters run 1.32 or newer).
KUBERNETES_VERSION = "1.32.0"

Obj = Mapping[str, Any]

# Workloads that run until stopped: these need probes, a NetworkPolicy and a PDB.
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")
RESOURCE_KEYS = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory")

# Custom resources kubernetes-validate has no schema for, checked against a local one:
# (apiVersion, kind) -> file in CRD_SCHEMAS.
CRD_SCHEMAS = ROOT / "deploy" / "crds"
LOCAL_SCHEMAS: Mapping[tuple[str, str], str] = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.schema.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.schema.json",
}


class BuildError(Exception):
    """``kubectl kustomize`` failed (or is missing); the message says why."""


@dataclass(frozen=True)
class Report:
    objects: int
    schema_checked: int
    violations: list[str]


def build(overlay: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize <overlay>`` renders. Raises BuildError."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise BuildError("kubectl not found on PATH (it provides `kubectl kustomize`)")
    # A fixed executable and an argument list, never a shell.
    result = subprocess.run(  # noqa: S603
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


def schema_problems(obj: Obj) -> list[str] | None:
    """Problems found by the Kubernetes schema, or None when there is no schema."""
    local = LOCAL_SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if local is not None:
        return local_schema_problems(obj, CRD_SCHEMAS / local)
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return None
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top level)"
        return [f"schema: {where}: {exc.message}"]
    return []


def local_schema_problems(obj: Obj, schema_file: Path) -> list[str]:
    """A custom resource against its local schema; a PrometheusRule's expressions
    must also parse as PromQL."""
    validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text()))
    problems = [
        f"schema: {'.'.join(str(p) for p in error.absolute_path) or '(top level)'}: {error.message}"
        for error in sorted(validator.iter_errors(dict(obj)), key=lambda e: list(e.path))
    ]
    if obj.get("kind") == "PrometheusRule":
        problems += rule_expression_problems(obj)
    return problems


def rule_expression_problems(rule: Obj) -> list[str]:
    """Each rule's ``expr`` parsed by a PromQL parser (functions, durations, matchers,
    brackets); one problem per expression that does not parse."""
    problems = []
    groups = (rule.get("spec") or {}).get("groups") or []
    for g, group in enumerate(groups if isinstance(groups, list) else []):
        rules = group.get("rules") if isinstance(group, dict) else None
        for r, item in enumerate(rules if isinstance(rules, list) else []):
            if not isinstance(item, dict) or "expr" not in item:
                continue
            name = item.get("alert") or item.get("record") or "?"
            try:
                promql_parser.parse(str(item["expr"]))
            except ValueError as exc:
                problems.append(f"spec.groups[{g}].rules[{r}] ({name}): expr: {exc}")
    return problems


# --------------------------------------------------------------------------- policy


def pod_spec(obj: Obj) -> Obj | None:
    """The pod spec a workload object runs, if it is one."""
    kind = obj.get("kind")
    spec: Obj = obj.get("spec") or {}
    if kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    elif kind not in (*LONG_RUNNING, "ReplicaSet", "Job", "Pod"):
        return None
    if kind != "Pod":
        spec = spec.get("template", {}).get("spec") or {}
    return spec or None


def pod_labels(obj: Obj) -> Mapping[str, str]:
    return obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels") or {}


def containers(spec: Obj) -> Iterator[Obj]:
    yield from spec.get("initContainers") or ()
    yield from spec.get("containers") or ()


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag or digest"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses the :latest tag"
    return None


def container_problems(kind: str, pod: Obj, container: Obj) -> list[str]:
    prefix = f"container {container.get('name', '?')}: "
    problems: list[str] = []
    image = image_problem(str(container.get("image", "")))
    if image:
        problems.append(image)
    resources = container.get("resources") or {}
    missing = [
        key
        for key in RESOURCE_KEYS
        if not (resources.get(key.split(".")[0]) or {}).get(key.split(".")[1])
    ]
    if missing:
        problems.append(f"resources not set: {', '.join(missing)}")
    if kind in LONG_RUNNING:
        for probe in ("readinessProbe", "livenessProbe"):
            if not container.get(probe):
                problems.append(f"no {probe}")
    pod_security = pod.get("securityContext") or {}
    security = container.get("securityContext") or {}
    non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    if non_root is not True:
        problems.append("runAsNonRoot is not true")
    if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
        problems.append("runAsUser is 0 (root)")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((security.get("capabilities") or {}).get("drop") or ()):
        problems.append("capabilities do not drop ALL")
    return [prefix + p for p in problems]


def selects(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector matches ``labels`` (an empty selector matches all)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or ()
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def namespace_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace", "default"))


def policy_problems(objects: Sequence[Obj]) -> list[tuple[str, str]]:
    """(object, problem) pairs for every POSTD policy the objects break."""
    found: list[tuple[str, str]] = []
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    workloads = {(o.get("kind"), o["metadata"]["name"]) for o in objects if pod_spec(o)}

    long_running = [o for o in objects if o.get("kind") in LONG_RUNNING]

    def own_policy(policy: Obj, workload: Obj) -> bool:
        """Selects this workload's pods, and not those of every other one (as the
        default-deny and the namespace-wide allow rules do)."""
        selector = policy["spec"].get("podSelector")
        ns = namespace_of(workload)
        if namespace_of(policy) != ns or not selects(selector, pod_labels(workload)):
            return False
        others = [o for o in long_running if o is not workload and namespace_of(o) == ns]
        return not others or not all(selects(selector, pod_labels(o)) for o in others)

    for obj in objects:
        kind = str(obj.get("kind"))
        spec = pod_spec(obj)
        if spec is not None:
            for container in containers(spec):
                found += [(name_of(obj), p) for p in container_problems(kind, spec, container)]
        if kind in LONG_RUNNING:
            labels = pod_labels(obj)
            ns = namespace_of(obj)
            if not any(own_policy(p, obj) for p in policies):
                found.append((name_of(obj), "no NetworkPolicy of its own selects its pods"))
            if not any(
                namespace_of(b) == ns and selects(b["spec"].get("selector"), labels)
                for b in budgets
            ):
                found.append((name_of(obj), "no PodDisruptionBudget selects its pods"))
        if kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = obj.get("spec", {}).get("scaleTargetRef", {})
            wanted = (target.get("kind", "Deployment"), target.get("name"))
            if wanted not in workloads:
                found.append((name_of(obj), f"scales {wanted[0]}/{wanted[1]}, which is not here"))

    namespaces = {namespace_of(o) for o in long_running}
    for ns in sorted(namespaces):
        if not any(
            namespace_of(p) == ns
            and not (p["spec"].get("podSelector") or {})
            and {"Ingress", "Egress"} <= set(p["spec"].get("policyTypes") or ())
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies
        ):
            found.append((f"Namespace/{ns}", "no default-deny NetworkPolicy (ingress and egress)"))
    return found


# --------------------------------------------------------------------------- main


def check(overlay: Path, label: str) -> Report:
    objects = build(overlay)
    violations: list[str] = []
    schema_checked = 0
    for obj in objects:
        problems = schema_problems(obj)
        if problems is not None:
            schema_checked += 1
            violations += [f"{label}: {name_of(obj)}: {p}" for p in problems]
    violations += [f"{label}: {who}: {problem}" for who, problem in policy_problems(objects)]
    return Report(len(objects), schema_checked, violations)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/check.py", description=__doc__.split("\n")[0])
    parser.add_argument("overlays", nargs="*", type=Path, help="kustomize directories")
    args = parser.parse_args(argv)
    overlays: list[Path] = args.overlays or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    failed = False
    for overlay in overlays:
        label = str(overlay.relative_to(ROOT)) if overlay.is_relative_to(ROOT) else str(overlay)
        try:
            report = check(overlay.resolve(), label)
        except BuildError as exc:
            print(f"{label}: {exc}", file=sys.stderr)
            return 2
        for line in report.violations:
            print(line)
        if report.violations:
            failed = True
        else:
            print(
                f"{label}: ok: {report.objects} objects, {report.schema_checked} checked against "
                f"the Kubernetes {KUBERNETES_VERSION} schemas or deploy/crds, "
                f"{report.objects - report.schema_checked} custom resources checked by policy only"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
