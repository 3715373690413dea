"""Fuzz the API end to end: generated objects against the real API server, with the operator running.

Hypothesis mutates the examples in ``examples/`` along the CRD schemas the
pydantic models generate (``crds/``): valid values, boundary values and one
past them, wrong types, unknown and missing fields, huge strings and lists,
odd Unicode, negative and huge numbers, quantities and durations at the edge
of their grammar, cross-field (CEL) rules broken and kept, immutable fields
changed, labels the operator reads, deletions. Each object goes through
``kubectl apply --server-side``, as a user would send it. Then:

* the API server refuses it, and its message names the field; or
* the operator (``mlops-operator run`` as a subprocess, so its whole log can be
  read) writes a status for exactly that generation whose ``Ready`` condition
  has a reason;

and at the end the operator is still running, never logged a traceback or an
ERROR, no reconcile raised, and with nothing being applied no object's status
keeps being rewritten (a loop).

There is no kubelet and no scheduler: a valid TrainingJob's Job stays
Pending, which is a reason too. One TrainingJob of the iris lineage has a
finished, passing run written into its status (as the TrainingJob
controller would after a real run), so generated ModelDeployments build real
Deployments, Services, PDBs and HPAs that the API server judges.

Examples share the API server's state (later objects update earlier ones of the
same name), so Hypothesis does not shrink: a failure reports the object as sent.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.envtest.controlplane import free_ports
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]

# CI runs the same examples every time; MLOPS_FUZZ_SEED=<n> (and more MLOPS_FUZZ_EXAMPLES) explores others.
EXAMPLES_PER_KIND = int(os.environ.get("MLOPS_FUZZ_EXAMPLES", "45"))
SEED = int(os.environ["MLOPS_FUZZ_SEED"]) if os.environ.get("MLOPS_FUZZ_SEED") else None
STATUS_TIMEOUT = 45.0
QUIET_WINDOW = 6.0
MOST_WRITES_IN_QUIET_WINDOW = 3
"""A DriftPolicy may check every 5 s (the smallest interval) and write what it saw; more is a loop."""
MOST_RECONCILES_IN_QUIET_WINDOW = 6
"""Per object, on average: checks, pending-pod rechecks and the backed-off retries of refused children."""

KINDS = {
    "TrainingJob": ("trainingjobs", ["iris", "diabetes"]),
    "ModelDeployment": ("modeldeployments", ["iris", "diabetes"]),
    "DriftPolicy": ("driftpolicies", ["iris", "diabetes"]),
}
EXAMPLE_FILE = {"TrainingJob": "trainingjob.yaml", "ModelDeployment": "modeldeployment.yaml", "DriftPolicy": "driftpolicy.yaml"}

NAMES_A_FIELD = re.compile(r"(?<![A-Za-z])\.?(spec|metadata)(\.|:|\[| |$)", re.MULTILINE)
"""How the API server points at a field: ``spec.replicas: Invalid value``, ``.spec: expected map``, ``metadata.name``."""

# Names: a small pool so later examples update earlier objects (new generations, immutable
# fields, CEL transition rules), plus names at and past the limits.
NAMES = ["fz-a", "fz-b", "fz-c", "iris", "a" * 52, "b" * 53, "x" * 63, "dot.ted"]
BAD_NAMES = ["x" * 64, "Upper", "-dash", "ünï", "a_b"]
# (No empty name: kubectl refuses that itself and never sends it.)

# Values that are wrong almost anywhere; the schema walk adds the ones that fit (or just miss) a field.
ODD_STRINGS = ["", " ", "-1", "1e40", "0.0001m", "NaN", "null", "true", "ｉｒｉｓ", "iris\u200b", "🙂", "\u202eevil",
               "a\nb", "x" * 254, "y" * 70_000, "../../etc/passwd", "sklearn://iris", "${HOME}", "%s%n"]
ODD_VALUES: list[Any] = [None, True, 0, -1, 2**31, 2**63, -(2**63), 1.5, -0.0, 1e308, -1e308, [], {}, ["x"], {"a": 1}]
QUANTITIES = ["0", "1", "-1", "1e40", "1e-40", "0.0001m", "0.5m", "1n", "100m", "1Gi", "1.5Gi", "1Ei", "9Ei", "+1",
              ".5", "1.", "1e3", "1E3", "1e1.5", "1e-0.5", "1i", "1 Gi", "Gi", 0, 1, -1, 2**62, 0.5]
DURATIONS = ["0s", "4s", "4.999s", "5s", "5000ms", "1h30m", "90s", "-1s", "1d", "1.5h", "s", "60", "2562047h",
             "99999999999h", "1h1h1h1h", 60]
# What the operator reads from labels and annotations of the objects users write.
META_KEYS = ["mlops.dev/approved", "mlops.dev/promotion", "mlops.dev/training-job", "mlops.dev/drift-policy",
             "mlops.dev/triggered-by", "mlops.dev/model", "app.kubernetes.io/managed-by"]
META_VALUES = ["true", "manual", "iris", "fz-a", "", "x" * 64, "no such"]

# Fields whose top value would make the replicaset controller create that many pods: no kubelet
# runs them here, so a thousand pending pods would only measure the controller-manager.
CAPPED = {("spec", "replicas"): 3}


def _crd_schema(kind: str) -> Obj:
    plural = KINDS[kind][0]
    crd = yaml.safe_load((ROOT / "crds" / f"{plural}.mlops.dev.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _paths(schema: Obj, path: tuple[Any, ...] = ("spec",)) -> list[tuple[tuple[Any, ...], Obj]]:
    """Every field path of the spec schema (list items as index 0), with its schema."""
    out = [(path, schema)]
    for key, sub in (schema.get("properties") or {}).items():
        out += _paths(sub, path + (key,))
    if schema.get("type") == "array" and "items" in schema:
        out += _paths(schema["items"], path + (0,))
    return out


def _number_candidates(node: Obj, integer: bool) -> list[Any]:
    out: list[Any] = [0, -1, 1]
    step = 1 if integer else 0.001
    for bound in ("minimum", "maximum"):
        if bound in node:
            b = node[bound]
            out += [b, b - step, b + step]
    if integer:
        out += [2**31, 2**53 + 1, 1.5, "3"]
    else:
        out += [0.5, 1e-300, 1e308, -1e308, "0.5", 7]
    return out


def _string_candidates(node: Obj, path: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = list(node.get("enum") or [])
    out += [v.upper() for v in out[:2]] + [v + " " for v in out[:1]]
    if node.get("x-mlops-quantity") or node.get("x-kubernetes-int-or-string"):
        out += QUANTITIES
    if "duration" in json.dumps(node.get("pattern", "")) or "ms|s|m|h" in str(node.get("pattern", "")):
        out += DURATIONS
    if "maxLength" in node:
        n = node["maxLength"]
        out += ["a" * n, "a" * (n + 1)]
    if path[-1] in ("model", "deployment", "from", "version"):
        out += ["iris", "diabetes", "iris-v1", "iris-v1-g1", "latest", "nothing-here", "a" * 63]
    if path[-1] == "source":
        out += ["sklearn://iris", "sklearn://wine", "sklearn://nope", "file:///etc/passwd", "https://127.0.0.1:1/x.csv",
                "pvc://claim/data.csv", "pvc://Claim/x", "http://x", "sklearn://"]
    if path[-1] == "class":
        out += ["sklearn.linear_model.LogisticRegression", "sklearn.ensemble.RandomForestRegressor", "os.system",
                "builtins.eval", "sklearn.NoSuchThing", "numpy.lib.format.open_memmap", "a.b"]
    return out + ODD_STRINGS


def _candidates(node: Obj, path: tuple[Any, ...]) -> list[Any]:
    """Values to try at one field: those the schema says fit, their neighbours just outside, and junk."""
    kind = node.get("type")
    if kind == "integer":
        out = _number_candidates(node, integer=True)
    elif kind == "number":
        out = _number_candidates(node, integer=False)
    elif kind == "boolean":
        out = [True, False, "true", 1]
    elif kind == "string" or node.get("x-kubernetes-int-or-string"):
        out = _string_candidates(node, path)
    elif kind == "array":
        items = node.get("items") or {}
        one = (items.get("enum") or ["f0"])[0] if items.get("type") == "string" else {"type": "dataDrift"}
        out = [[], [one], [one, one], [f"f{i}" for i in range(node.get("maxLength", 1000) + 1)],
               [{"type": t} for t in ("dataDrift", "predictionDrift", "psi", "errorRate", "rmse")], "x"]
    elif node.get("x-kubernetes-preserve-unknown-fields"):
        out = [{}, {"n_estimators": 0}, {"n_estimators": -5}, {"max_depth": None}, {"nope": 1}, {"random_state": 2**40},
               {"n_estimators": "ten"}, {"ünï": {"deep": [1, 2, {"x": "y" * 1000}]}}, {f"k{i}": i for i in range(300)},
               {"n_jobs": -1, "verbose": 10}, {"blob": "z" * 250_000}]
    else:  # an object
        out = [{}, None, "x", {"unknownField": 1}]
    cap = CAPPED.get(path)
    if cap is not None:
        out = [v for v in out if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > cap)]
    return out + ODD_VALUES


def _fits(node: Obj, value: Any) -> bool:
    """Whether ``value`` passes this field's own schema (type, bounds, enum, length, pattern, known keys), not the CEL rules."""
    kind = node.get("type")
    if node.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and re.fullmatch(node.get("pattern", ".*"), value) is not None)
    types = {"integer": int, "number": (int, float), "string": str, "boolean": bool, "array": list, "object": dict}
    if kind not in types or not isinstance(value, types[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return False
    if isinstance(value, (int, float)) and not (node.get("minimum", -math.inf) <= value <= node.get("maximum", math.inf)):
        return False
    if isinstance(value, (str, list)) and not (node.get("minLength", node.get("minItems", 0)) <= len(value)
                                               <= node.get("maxLength", node.get("maxItems", math.inf))):
        return False
    if "enum" in node and value not in node["enum"]:
        return False
    if isinstance(value, dict) and not node.get("x-kubernetes-preserve-unknown-fields"):
        props = node.get("properties") or {}
        if not set(node.get("required") or ()) <= set(value) or not set(value) <= set(props):
            return False
        return all(_fits(props[k], v) for k, v in value.items())
    if isinstance(value, list):
        return all(_fits(node.get("items") or {}, v) for v in value)
    return not (isinstance(value, str) and "pattern" in node and re.search(node["pattern"], value) is None)


def _set(obj: Obj, path: tuple[Any, ...], value: Any) -> None:
    """Set ``path`` to ``value`` (None: remove it), making the objects and lists on the way what the path needs."""
    node: Any = obj
    for key, nxt in zip(path, path[1:]):
        want = list if isinstance(nxt, int) else dict
        if isinstance(node, list):
            while len(node) <= key:
                node.append(None)
        if not isinstance(node[key] if isinstance(node, list) else node.get(key), want):
            node[key] = want()
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        if value is None:
            del node[last:last + 1]
            return
        while len(node) <= last:
            node.append({})
        node[last] = value
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value


@st.composite
def objects(draw: st.DrawFn, kind: str) -> Obj:
    """An example of ``kind`` with up to three mutations (none: the example as it is, under another name)."""
    base = draw(st.sampled_from(KINDS[kind][1]))
    obj = yaml.safe_load((ROOT / "examples" / base / EXAMPLE_FILE[kind]).read_text())
    obj["metadata"]["name"] = draw(st.sampled_from(BAD_NAMES if draw(st.integers(0, 5)) == 0 else NAMES))
    fields = _paths(_crd_schema(kind))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set"] * 8 + ["remove", "remove", "unknown", "meta"]))
        path, node = draw(st.sampled_from(fields))
        if op == "set":
            values = _candidates(node, path)
            fitting = [v for v in values if _fits(node, v)]
            # Mostly values the field itself accepts (they still meet cross-field rules, other fields
            # and the operator's own checks), the rest junk.
            pool = fitting if fitting and draw(st.integers(0, 3)) else values
            _set(obj, path, copy.deepcopy(draw(st.sampled_from(pool))))
        elif op == "remove":
            _set(obj, path, None)
        elif op == "unknown":
            parent = path if node.get("type") == "object" else path[:-1] or ("spec",)
            _set(obj, parent + (draw(st.sampled_from(["unknownField", "Model", "replica", "x" * 300, "ü"])),), 1)
        else:
            where = draw(st.sampled_from(["labels", "annotations"]))
            key, value = draw(st.sampled_from(META_KEYS)), draw(st.sampled_from(META_VALUES))
            obj["metadata"].setdefault(where, {})[key] = value
    return obj


# --------------------------------------------------------------------------- the operator, as a process


class Operator:
    """``mlops-operator run`` watching one namespace, its whole log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        (self.metrics_port,) = free_ports(1)
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["PYTHONUNBUFFERED"] = "1"
        argv = [str(Path(sys.executable).parent / "mlops-operator"), "run", "-n", namespace, f"--kubeconfig={kubeconfig}",
                "--liveness=", f"--metrics-port={self.metrics_port}", "--resync-seconds=3600"]
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def reconciles(self) -> dict[tuple[str, str], float]:
        """``mlops_operator_reconciles_total`` by (kind, outcome); empty while the metrics server is not up yet."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            text = opener.open(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        except ConnectionRefusedError:
            return {}
        except urllib.error.URLError as err:
            if isinstance(err.reason, ConnectionRefusedError):
                return {}
            raise
        return {(s.labels["kind"], s.labels["outcome"]): s.value
                for fam in text_string_to_metric_families(text) if fam.name == "mlops_operator_reconciles"
                for s in fam.samples if s.name.endswith("_total")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --------------------------------------------------------------------------- the test


def _passing_iris_run(control_plane, namespace: str) -> None:
    """iris-v1 with the status a finished, passing run gets, so ModelDeployments have something to serve."""
    tj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(tj))
    version = "iris-v1-g1"
    status = {"phase": "Succeeded", "observedGeneration": 1, "modelVersion": version, "jobName": version,
              "completionTime": "2026-01-01T00:00:00Z", "metrics": {"accuracy": 0.97},
              "gate": {"result": "Passed", "metric": "accuracy", "value": 0.97, "bound": 0.9},
              "artifact": {"uri": f"store://{namespace}/iris/{version}", "sha256": "ab" * 32},
              "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "passed its gate",
                              "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]}
    control_plane.kubectl("patch", "trainingjob", "iris-v1", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))


def _ready_reason(obj: Obj) -> tuple[int, str] | None:
    """(generation, Ready reason) once the status describes the object's current generation."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return None
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if not ready or ready[0].get("status") not in ("True", "False", "Unknown") or not ready[0].get("reason"):
        return None
    return obj["metadata"]["generation"], ready[0]["reason"]


def test_generated_objects_are_refused_by_field_or_get_a_reason(crds, namespace, tmp_path) -> None:
    _passing_iris_run(crds, namespace)
    # A control plane that just installed the CRDs may answer 429 "storage is (re)initializing" for a
    # moment; kopf would log its retries as errors. Start once every kind can be listed.
    wait_until(lambda: crds.kubectl("get", ",".join(p for p, _ in KINDS.values()), "-n", namespace, check=False).returncode == 0,
               timeout=60, what="the three kinds to be listable")
    operator = Operator(crds.kubeconfig, namespace, tmp_path / "operator.log")
    outcomes: dict[str, list[str]] = {kind: [] for kind in KINDS}

    def fail(message: str) -> None:
        raise AssertionError(f"{message}\n--- operator log (tail) ---\n{operator.log()[-6000:]}")

    def get(kind: str, name: str) -> Obj | None:
        out = crds.kubectl("get", KINDS[kind][0], "-n", namespace, "-o", "json", "--ignore-not-found", "--", name).stdout
        return json.loads(out) if out.strip() else None

    def try_one(kind: str, obj: Obj, delete_first: bool) -> None:
        name = obj["metadata"]["name"]
        if delete_first and name:
            crds.kubectl("delete", KINDS[kind][0], "-n", namespace, "--ignore-not-found", "--wait=false", "--", name,
                         check=False)
        sent = yaml.safe_dump(obj, allow_unicode=True)
        proc = crds.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=fuzz", "-n", namespace,
                            "-f", "-", input=sent, check=False)
        if proc.returncode != 0:
            if not NAMES_A_FIELD.search(proc.stderr):
                fail(f"the refusal of this {kind} names no field:\n{proc.stderr[:2000]}\n--- sent ---\n{sent[:3000]}")
            outcomes[kind].append("refused")
            return
        if operator.proc.poll() is not None:
            fail(f"the operator exited with {operator.proc.returncode}")
        try:
            _, reason = wait_until(lambda: (lambda o: o and _ready_reason(o))(get(kind, name)),
                                            timeout=STATUS_TIMEOUT, interval=0.1, what=f"a status for {kind} {name}")
        except AssertionError as err:
            fail(f"{err}: {json.dumps(get(kind, name), indent=1)[:3000]}\n--- sent ---\n{sent[:3000]}")
        outcomes[kind].append(reason)

    try:
        wait_until(lambda: operator.proc.poll() is not None or operator.reconciles().get(("TrainingJob", "ok")),
                   timeout=60, what="the operator's first reconcile")
        assert operator.proc.poll() is None, operator.log()[-4000:]
        for kind in KINDS:
            @settings(max_examples=EXAMPLES_PER_KIND, deadline=None, derandomize=SEED is None, database=None,
                      phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
            @given(obj=objects(kind), delete_first=st.booleans())
            def fuzz(obj: Obj, delete_first: bool) -> None:
                try_one(kind, obj, delete_first)

            (fuzz if SEED is None else seed(SEED)(fuzz))()
        # Every kind had objects the API server took and objects it refused.
        for kind, seen in outcomes.items():
            assert "refused" in seen and any(r != "refused" for r in seen), (kind, seen)

        # With nothing being applied, no status keeps being rewritten.
        before = operator.reconciles()
        writes = _status_writes(crds, namespace, QUIET_WINDOW)
        after = operator.reconciles()
        looping = {k: n for k, n in writes.items() if n > MOST_WRITES_IN_QUIET_WINDOW}
        assert not looping, f"statuses rewritten over and over in {QUIET_WINDOW:.0f}s: {looping}"
        # Nor is any object reconciled over and over without writing (a requeue with no delay).
        done = sum(after.values()) - sum(before.values())
        assert done <= len(writes) * MOST_RECONCILES_IN_QUIET_WINDOW, f"{done} reconciles of {len(writes)} objects: {before} -> {after}"

        errors = {k: v for k, v in after.items() if k[1] == "error" and v}
        assert not errors, f"reconciles that raised: {errors}\n{operator.log()[-6000:]}"
        assert operator.proc.poll() is None, f"the operator exited: {operator.log()[-6000:]}"
    finally:
        operator.stop()
    log = operator.log()
    for bad in ("Traceback", "[ERROR", "CRITICAL"):
        assert bad not in log, f"the operator logged {bad}:\n{_around(log, bad)}"
    print({kind: _tally(seen) for kind, seen in outcomes.items()}, "writes in the quiet window:", writes)
    if os.environ.get("MLOPS_FUZZ_LOG"):
        Path(os.environ["MLOPS_FUZZ_LOG"]).write_text(log)


def _status_writes(control_plane, namespace: str, seconds: float) -> dict[str, int]:
    """How often each of our objects was modified during ``seconds`` (a watch, bounded by its timeout)."""
    counts: dict[str, int] = {}
    for plural in ("trainingjobs", "modeldeployments", "driftpolicies"):
        counts.update({f"{plural}/{k}": 0 for k in _names(control_plane, plural, namespace)})
    watches = [subprocess.Popen([control_plane.kubectl_path, f"--kubeconfig={control_plane.kubeconfig}", "get", plural,
                                 "-n", namespace, "--watch-only", "--output-watch-events", "-o",
                                 "jsonpath={.type} {.object.metadata.name}{\"\\n\"}", f"--request-timeout={seconds:.0f}s"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for plural in ("trainingjobs", "modeldeployments", "driftpolicies")]
    for plural, proc in zip(("trainingjobs", "modeldeployments", "driftpolicies"), watches):
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "MODIFIED":
                counts[f"{plural}/{parts[1]}"] = counts.get(f"{plural}/{parts[1]}", 0) + 1
    return counts


def _names(control_plane, plural: str, namespace: str) -> list[str]:
    out = control_plane.kubectl("get", plural, "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def _around(log: str, needle: str) -> str:
    at = log.find(needle)
    return log[max(0, at - 2000): at + 4000]


def _tally(seen: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in seen:
        out[r] = out.get(r, 0) + 1
    return out

