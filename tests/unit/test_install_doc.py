"""docs/install.md is true: its commands name real paths and objects, its helm flags render, its requests get its answers.

The shell blocks of the page are parsed (not grepped): every ``kubectl apply``
path must exist, ``helm install`` is replayed as ``helm template`` with the same
arguments against the real chart, the objects ``kubectl wait`` and
``port-forward`` name must be what the examples and the operator create, and
each ``curl`` is sent, body and path unchanged, to a real model server serving
a model trained from examples/iris exactly as the operator's Job would.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mlops_operator.controllers import modeldeployment as md_ctl
from mlops_operator.controllers import trainingjob as tj_ctl
from mlops_operator.controllers.settings import Settings
from mlops_operator.runtime import trainer
from tests.chart.conftest import Helm, helm  # noqa: F401  (the session's helm fixture)
from tests.waiting import wait_until

from .test_server_support import Server

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "install.md"


# --- reading the page ----------------------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    text: str
    line: int


def read_blocks(text: str) -> list[Block]:
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, re.M | re.S):
        out.append(Block(m.group(1), m.group(2), text[:m.start()].count("\n") + 1))
    return out


def commands(block: Block) -> list[list[str]]:
    """The block's commands as argv lists: continuations joined, comments dropped; one command per line."""
    out = []
    for logical in block.text.replace("\\\n", " ").splitlines():
        argv = shlex.split(logical, comments=True)
        if argv:
            assert not {"|", "&&", ";", "||", "&"} & set(argv), f"line {block.line}: one plain command per line: {logical}"
            out.append(argv)
    return out


BLOCKS = read_blocks(DOC.read_text())
SHELL = [b for b in BLOCKS if b.lang == "sh"]
COMMANDS = [c for b in SHELL for c in commands(b)]


def bare(argv: list[str]) -> list[str]:
    """The command without its namespace option, so `kubectl -n NS rollout ...` reads as `kubectl rollout ...`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("-n", "--namespace"):
            skip = True
        elif not arg.startswith("--namespace="):
            out.append(arg)
    return out


def find(*prefix: str) -> list[list[str]]:
    return [c for c in COMMANDS if bare(c)[:len(prefix)] == list(prefix)]


def one(*prefix: str) -> list[str]:
    found = find(*prefix)
    assert len(found) == 1, f"expected one `{' '.join(prefix)}` command, found {len(found)}"
    return found[0]


def option(argv: list[str], *names: str) -> str | None:
    """The value of an option given as `--name value` or `--name=value`."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def positionals(argv: list[str], skip: int, with_value: set[str]) -> list[str]:
    """The arguments that are not options, after the first ``skip`` words of the command (namespace dropped)."""
    argv = bare(argv)
    out, i = [], skip
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            i += 2 if arg in with_value else 1
            continue
        out.append(arg)
        i += 1
    return out


KUBECTL_VALUED = {"-n", "--namespace", "-f", "--filename", "--for", "--timeout", "-o", "--output", "-l", "--selector"}


# --- the walkthrough --------------------------------------------------------------------------------------------


def test_the_page_walks_every_step_in_order() -> None:
    steps = [("kind", "create", "cluster"), ("docker", "build"), ("kind", "load", "docker-image"), ("helm", "install"),
             ("kubectl", "rollout", "status"), ("kubectl", "apply"), ("kubectl", "wait"), ("kubectl", "port-forward"),
             ("curl",), ("helm", "uninstall"), ("kind", "delete", "cluster")]
    positions = []
    for step in steps:
        at = [i for i, c in enumerate(COMMANDS) if bare(c)[:len(step)] == list(step)]
        assert at, f"no `{' '.join(step)}` in docs/install.md"
        positions.append(at[0])
    assert positions == sorted(positions), "the steps are out of order"


def test_one_cluster_name_and_one_image_throughout() -> None:
    text = DOC.read_text()
    cluster = option(one("kind", "create", "cluster"), "--name")
    assert cluster and option(one("kind", "load", "docker-image"), "--name") == cluster
    assert option(one("kind", "delete", "cluster"), "--name") == cluster
    image = option(one("docker", "build"), "-t", "--tag")
    assert image and ":" in image and not image.endswith(":latest"), image
    assert positionals(one("docker", "build"), 2, {"-t", "--tag", "-f", "--file"}) == ["."], "built from the repository root"
    assert positionals(one("kind", "load", "docker-image"), 3, {"--name"}) == [image]
    # The k3d notes, inline in the text.
    assert f"k3d cluster create {cluster}" in text and f"k3d cluster delete {cluster}" in text
    assert f"k3d image import {image} -c {cluster}" in text


def test_applied_and_deleted_paths_exist() -> None:
    used = [c for c in find("kubectl", "apply") + find("kubectl", "delete") if option(c, "-f", "--filename")]
    assert used
    for argv in used:
        path = ROOT / option(argv, "-f", "--filename")  # type: ignore[operator]
        assert path.exists(), f"{' '.join(argv)}: no such path"
        assert manifests(path), f"{path}: no manifests"


def manifests(path: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -f PATH` sends: the .yaml/.yml/.json files of a folder (not recursive) or the file."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")) if path.is_dir() else [path]
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def applied() -> list[dict[str, Any]]:
    return [d for c in find("kubectl", "apply") for d in manifests(ROOT / option(c, "-f", "--filename"))]  # type: ignore[operator]


def resource_names() -> dict[str, str]:
    """Every name kubectl accepts for the three kinds (kind, singular, plural, short names) -> Kind."""
    out = {}
    for crd in (ROOT / "crds").glob("*.yaml"):
        names = yaml.safe_load(crd.read_text())["spec"]["names"]
        for n in [names["kind"], names["singular"], names["plural"], *names.get("shortNames", [])]:
            out[n.lower()] = names["kind"]
    return out


def test_waited_and_described_objects_are_the_examples() -> None:
    kinds = resource_names()
    objects = {(d["kind"], d["metadata"]["name"]) for d in applied()}
    waited = find("kubectl", "wait")
    assert len(waited) >= 2
    seen = set()
    for argv in waited:
        assert option(argv, "--for") == "condition=Ready"
        for ref in positionals(argv, 2, KUBECTL_VALUED):
            kind, _, name = ref.partition("/")
            assert (kinds[kind.lower()], name) in objects, f"kubectl wait {ref}: not in the applied examples"
            seen.add(kinds[kind.lower()])
    assert seen == {"TrainingJob", "ModelDeployment"}, "wait for the training and for the serving"
    for argv in find("kubectl", "describe"):
        kind, name = positionals(argv, 2, KUBECTL_VALUED)
        assert (kinds[kind.lower()], name) in objects


def test_the_training_job_logs_name_the_operators_job() -> None:
    tjs = [d for d in applied() if d["kind"] == "TrainingJob"]
    jobs = {tj_ctl.job_name({**tj, "metadata": {**tj["metadata"], "generation": 1}}) for tj in tjs}
    logged = [positionals(c, 2, KUBECTL_VALUED)[0] for c in find("kubectl", "logs")]
    job_refs = [r.partition("/")[2] for r in logged if r.startswith("job/")]
    assert job_refs and set(job_refs) <= jobs, (job_refs, jobs)
    for name in jobs:  # the page says the version is named like the Job
        assert f"`{name}`" in DOC.read_text()


# --- the chart, rendered with the page's flags ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, Any]:  # noqa: F811
    install = one("helm", "install")
    objs = [d for d in yaml.safe_load_all(helm("template", *install[2:]).stdout) if d]
    release, chart = positionals(install, 2, {"--namespace", "-n", "--set", "--set-string", "-f", "--values", "--version"})[:2]
    return {"objects": objs, "release": release, "chart": chart, "namespace": option(install, "--namespace", "-n"),
            "install": install}


def test_install_uses_the_repository_chart(rendered: dict[str, Any]) -> None:
    assert (ROOT / rendered["chart"] / "Chart.yaml").is_file()
    assert rendered["namespace"], "helm install names its namespace"
    assert "--wait" not in rendered["install"], "--wait would wait for claims that bind only when a pod mounts them"


def test_the_operator_runs_the_image_the_page_builds(rendered: dict[str, Any]) -> None:
    image = option(one("docker", "build"), "-t", "--tag")
    deployments = [d for d in rendered["objects"] if d["kind"] == "Deployment"]
    assert len(deployments) == 1
    dep = deployments[0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == image and env["MLOPS_IMAGE"] == image
    # a loaded image must not be pulled, neither by the operator nor by the pods it creates
    assert container["imagePullPolicy"] in ("IfNotPresent", "Never")
    assert env["MLOPS_IMAGE_PULL_POLICY"] == container["imagePullPolicy"]
    # `rollout status` and `logs` name this Deployment, in the release namespace
    for argv in find("kubectl", "rollout", "status") + find("kubectl", "logs"):
        for ref in positionals(argv, 2, KUBECTL_VALUED):
            if ref.startswith("deployment/"):
                assert ref == f"deployment/{dep['metadata']['name']}"
                assert option(argv, "-n", "--namespace") == dep["metadata"]["namespace"] == rendered["namespace"]


def test_claims_are_readwriteonce_where_the_example_runs(rendered: dict[str, Any]) -> None:
    claims = [d for d in rendered["objects"] if d["kind"] == "PersistentVolumeClaim"]
    dep = next(d for d in rendered["objects"] if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    mounted = {json.loads(env["MLOPS_STORE_VOLUME"])["persistentVolumeClaim"]["claimName"],
               json.loads(env["MLOPS_FEEDBACK_VOLUME"])["persistentVolumeClaim"]["claimName"]}
    assert {c["metadata"]["name"] for c in claims} == mounted, "the chart creates both claims the workloads mount"
    for c in claims:
        # kind's and k3d's local-path StorageClasses provide ReadWriteOnce only
        assert c["spec"]["accessModes"] == ["ReadWriteOnce"], c["metadata"]["name"]
        assert "storageClassName" not in c["spec"], "the cluster's default class"
    namespaces = {c["metadata"]["namespace"] for c in claims}
    applies = {option(c, "-n", "--namespace") for c in find("kubectl", "apply")}
    assert applies == namespaces, "the example must go where the claims are (a pod mounts claims of its own namespace)"
    # the names the page gives for the claims
    text = DOC.read_text()
    for name in mounted:
        assert f"`{name}`" in text


def test_every_kubectl_command_uses_the_release_namespace(rendered: dict[str, Any]) -> None:
    kubectl = [c for c in COMMANDS if c[0] == "kubectl"]
    for argv in kubectl:
        assert option(argv, "-n", "--namespace") == rendered["namespace"] or argv[1:3] == ["delete", "crd"], " ".join(argv)
    assert option(one("helm", "uninstall"), "-n", "--namespace") == rendered["namespace"]
    assert positionals(one("helm", "uninstall"), 2, {"-n", "--namespace"}) == [rendered["release"]]


def test_uninstall_removes_what_the_chart_keeps(rendered: dict[str, Any]) -> None:
    def kept(kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in rendered["objects"] if d["kind"] == kind
                and (d["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"}

    pvcs, crds = kept("PersistentVolumeClaim"), kept("CustomResourceDefinition")
    assert pvcs and crds
    assert set(positionals(one("kubectl", "delete", "pvc"), 3, KUBECTL_VALUED)) == pvcs
    assert set(positionals(one("kubectl", "delete", "crd"), 3, KUBECTL_VALUED)) == crds
    delete_examples = [c for c in find("kubectl", "delete") if option(c, "-f")]
    assert delete_examples and COMMANDS.index(delete_examples[0]) < COMMANDS.index(one("helm", "uninstall")), (
        "delete the example while the operator still runs")


# --- the requests, against a real server -------------------------------------------------------------------------


def example(kind: str) -> dict[str, Any]:
    """The applied example of a kind, as the API server holds it: in the page's namespace, with a uid, generation 1."""
    found = [d for d in applied() if d["kind"] == kind]
    assert len(found) == 1
    namespace = option(one("kubectl", "apply"), "-n", "--namespace")
    return {**found[0], "metadata": {**found[0]["metadata"], "namespace": namespace, "generation": 1, "uid": f"{kind}-uid"}}


def test_port_forward_reaches_the_service_the_operator_creates() -> None:
    md = example("ModelDeployment")
    service = md_ctl.build_service(md)
    argv = one("kubectl", "port-forward")
    target, ports = positionals(argv, 2, KUBECTL_VALUED)
    local, _, remote = ports.partition(":")
    assert target == f"svc/{service['metadata']['name']}"
    assert int(remote) == service["spec"]["ports"][0]["port"]
    container = md_ctl.build_deployment(md, "v", "0" * 64, Settings())["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert f"port {container['ports'][0]['containerPort']}" in DOC.read_text()  # "listens on port 8080 in its pods"
    assert re.search(rf"\bon port {remote}\b", DOC.read_text()), "the page names the Service port"
    for curl in find("curl"):
        url = urlsplit(curl_request(curl)[1])
        assert url.hostname in ("localhost", "127.0.0.1") and url.port == int(local)


def curl_request(argv: list[str]) -> tuple[str, str, dict[str, str], bytes | None]:
    """method, URL, headers, body of a curl command using -s, -H, -d and -X only."""
    method, url, headers, body = None, None, {}, None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-s", "-sS", "--silent"):
            pass
        elif arg in ("-H", "--header"):
            key, _, value = argv[i + 1].partition(":")
            headers[key.strip()] = value.strip()
            i += 1
        elif arg in ("-d", "--data", "--data-raw"):
            body = argv[i + 1].encode()
            i += 1
        elif arg in ("-X", "--request"):
            method = argv[i + 1]
            i += 1
        elif arg.startswith("-"):
            raise AssertionError(f"curl option {arg} not understood by this test")
        else:
            assert url is None, "one URL per curl"
            url = arg
        i += 1
    assert url
    return method or ("POST" if body is not None else "GET"), url, headers, body


def exchanges() -> list[tuple[list[str], Any]]:
    """Each curl of the page with the JSON answer shown right after its block."""
    out = []
    for i, block in enumerate(BLOCKS):
        curls = [c for c in commands(block) if c[0] == "curl"] if block.lang == "sh" else []
        if curls:
            assert len(curls) == 1, f"line {block.line}: one curl per block, its answer in the next"
            assert i + 1 < len(BLOCKS) and BLOCKS[i + 1].lang == "json", f"line {block.line}: the answer must follow"
            out.append((curls[0], json.loads(BLOCKS[i + 1].text)))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The example's model, trained by the operator's Job command line and served by its Deployment's."""
    tmp = tmp_path_factory.mktemp("install-doc")
    settings = Settings()
    tj, md = example("TrainingJob"), example("ModelDeployment")

    job = tj_ctl.build_job(tj, settings)
    pod = job["spec"]["template"]
    spec_file = tmp / "trainingjob.json"
    spec_file.write_text(pod["metadata"]["annotations"][tj_ctl.SPEC_ANNOTATION])
    paths = {tj_ctl.SPEC_PATH: str(spec_file), settings.store_path: str(tmp / "store"),
             "/dev/termination-log": str(tmp / "termination-log")}
    args = [paths.get(a, a) for a in pod["spec"]["containers"][0]["args"]]
    assert args[0] == "train"
    assert trainer.main(args[1:]) == 0, "the example trains and passes its gate"
    summary = json.loads((tmp / "termination-log").read_text())

    dep = md_ctl.build_deployment(md, summary["version"], summary["sha256"], settings)
    serve = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert serve[0] == "serve"
    paths = {settings.store_path: str(tmp / "store"), settings.feedback_path: str(tmp / "feedback"), "0.0.0.0": "127.0.0.1"}
    argv = [paths.get(a, a) for a in serve[1:]]
    argv[argv.index("--port") + 1] = "0"  # a free port of 127.0.0.1
    s = Server(*argv)
    try:
        wait_until(lambda: s.request("GET", "/v2/health/ready")[0] == 200, timeout=60, what="the server to be ready")
        yield s, summary
    finally:
        assert s.stop() == 0


ROW_ID = re.compile(r"^([0-9a-f]{8})-(\d+):(\d+)$")


def same_answer(shown: Any, real: Any, where: str = "answer") -> None:
    """The page's answer equals the server's, except the random prefix of generated ids and rounding of probabilities."""
    if isinstance(shown, dict):
        assert isinstance(real, dict) and set(shown) == set(real), f"{where}: keys {sorted(shown)} != {sorted(real)}"
        for k in shown:
            same_answer(shown[k], real[k], f"{where}.{k}")
    elif isinstance(shown, list):
        assert isinstance(real, list) and len(shown) == len(real), f"{where}: {shown} != {real}"
        for i, (a, b) in enumerate(zip(shown, real)):
            same_answer(a, b, f"{where}[{i}]")
    elif isinstance(shown, str) and ROW_ID.match(shown):
        assert isinstance(real, str) and ROW_ID.match(real), f"{where}: {real!r} is not a generated id"
        assert ROW_ID.match(shown).groups()[1:] == ROW_ID.match(real).groups()[1:], f"{where}: {shown} != {real}"  # type: ignore[union-attr]
    elif isinstance(shown, float):
        assert real == pytest.approx(shown, abs=0.05), f"{where}: {shown} != {real}"
    else:
        assert shown == real and type(shown) is type(real), f"{where}: {shown!r} != {real!r}"


def test_the_requests_get_the_answers_shown(server: tuple[Server, dict[str, Any]]) -> None:
    s, summary = server
    shown = exchanges()
    paths = [urlsplit(curl_request(c)[1]).path for c, _ in shown]
    model = example("ModelDeployment")["spec"]["model"]
    assert f"/v1/models/{model}:predict" in paths and f"/v2/models/{model}/infer" in paths
    assert f"/v1/models/{model}/feedback" in paths
    for curl, answer in shown:  # in the page's order: the feedback names an id an earlier request got
        method, url, headers, body = curl_request(curl)
        status, resp_headers, real = s.request(method, urlsplit(url).path, raw=body, headers=headers)
        assert status == 200, (url, real)
        assert resp_headers["x-model-version"] == summary["version"]
        same_answer(answer, real, urlsplit(url).path)
    # the version the page names is the one the operator's first Job stores
    assert f"`{summary['version']}`" in DOC.read_text()


def test_the_feature_names_the_page_lists_are_the_models(server: tuple[Server, dict[str, Any]]) -> None:
    s, _ = server
    model = example("ModelDeployment")["spec"]["model"]
    assert f"GET /v2/models/{model}" in DOC.read_text()
    status, _, meta = s.request("GET", f"/v2/models/{model}")
    assert status == 200
    text = " ".join(DOC.read_text().split())
    names = [i["name"] for i in meta["inputs"]]
    assert ", ".join(f"`{n}`" for n in names) in text, names
    classes = meta["parameters"]["classes"]
    assert "(" + ", ".join(f"`{c}`" for c in classes) + ")" in text, classes
