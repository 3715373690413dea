"""The rollout router of the model server, over real HTTP on 127.0.0.1: champion and challenger are real servers.

The champion serves iris v1 (a forest on the true labels); the challenger serves
iris v2, a forest trained on shuffled labels, so the two disagree on most rows
and an answer tells which side produced it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from mlops_operator.runtime.router import Router, merge_feedback
from mlops_operator.runtime.sensor import parse_metrics
from mlops_operator.store import ModelStore

from .test_server_support import Server, _pipeline, _write, make_store, run_serve


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    make_store(root)
    iris = load_iris()
    y = np.random.default_rng(1).permutation(iris.target)
    feats = [{"name": n, "dtype": "float64", "kind": "numeric"} for n in ["sepal_length", "sepal_width", "petal_length", "petal_width"]]
    _write(ModelStore(root), "iris", "v2", _pipeline(RandomForestClassifier(n_estimators=5, random_state=1), 4, []),
           iris.data.astype(np.float64), y, feats, "classification", "species")
    return root


@pytest.fixture(scope="module")
def challenger(store: Path):  # type: ignore[no-untyped-def]
    s = Server("--store", str(store), "--model", "iris", "--version", "v2")
    yield s
    assert s.stop() == 0


def _champion(store: Path, *route: str) -> Server:
    return Server("--store", str(store), "--model", "iris", "--version", "v1", *route)


ROWS = load_iris().data[::3].tolist()  # 50 rows


def _infer(s: Server, row: list[float], rid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [row]}]}
    if rid:
        body["id"] = rid
    status, _, out = s.request("POST", "/v2/models/iris/infer", body)
    assert status == 200, out
    return out


def _wait_for(fn, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _predict_requests(s: Server) -> int:
    snap = parse_metrics(s.metrics())
    return sum(n for (proto, code), n in snap.requests.items() if proto in ("v1", "v2") and code == "200")


def test_shadow_challenger_never_changes_what_a_client_receives(store: Path, challenger: Server) -> None:
    plain = _champion(store)
    shadowed = _champion(store, "--route-to", f"http://127.0.0.1:{challenger.port}", "--route-mode", "shadow")
    try:
        before = _predict_requests(challenger)
        for row in ROWS:
            _, _, a = plain.request("POST", "/v1/models/iris:predict", {"instances": [row]})
            _, _, b = shadowed.request("POST", "/v1/models/iris:predict", {"instances": [row]})
            assert b["predictions"] == a["predictions"]
            v2a, v2b = _infer(plain, row), _infer(shadowed, row)
            assert v2b["outputs"] == v2a["outputs"] and v2b["model_version"] == "v1"
        # Every request was copied to the challenger, which answered differently on many rows.
        assert _wait_for(lambda: _predict_requests(challenger) - before >= 2 * len(ROWS)) is True
        theirs = [challenger.request("POST", "/v1/models/iris:predict", {"instances": [r]})[2]["predictions"][0] for r in ROWS]
        ours = [plain.request("POST", "/v1/models/iris:predict", {"instances": [r]})[2]["predictions"][0] for r in ROWS]
        assert sum(a != b for a, b in zip(theirs, ours)) >= 10
    finally:
        assert plain.stop() == 0
        assert shadowed.stop() == 0


def test_shadow_labels_score_both_sides_under_the_same_ids(store: Path, challenger: Server) -> None:
    shadowed = _champion(store, "--route-to", f"http://127.0.0.1:{challenger.port}", "--route-mode", "shadow")
    try:
        ids = []
        requests_before = _predict_requests(challenger)
        for row in ROWS[:20]:
            _, _, out = shadowed.request("POST", "/v1/models/iris:predict", {"instances": [row]})
            ids.append(out["ids"][0])
        before = parse_metrics(challenger.metrics()).feedback.labels
        # The copies are answered, so their ids are remembered on the challenger.
        assert _wait_for(lambda: _predict_requests(challenger) - requests_before >= 20) is True
        truth = load_iris().target[::3][:20].tolist()
        status, _, resp = shadowed.request("POST", "/v1/models/iris/feedback",
                                           {"feedback": [{"id": i, "label": t} for i, t in zip(ids, truth)]})
        assert status == 200 and resp["accepted"] == 20 and resp["unknown"] == []
        assert _wait_for(lambda: parse_metrics(challenger.metrics()).feedback.labels - before == 20) is True
        mine = parse_metrics(shadowed.metrics()).feedback
        assert mine.labels == 20 and mine.errors <= 2  # the champion is the good forest
    finally:
        assert shadowed.stop() == 0


def test_canary_sends_exactly_its_weight_to_the_challenger(store: Path, challenger: Server) -> None:
    canary = _champion(store, "--route-to", f"http://127.0.0.1:{challenger.port}", "--route-mode", "canary",
                       "--route-weight", "0.25")
    try:
        versions = [_infer(canary, row)["model_version"] for row in ROWS[:40]]
        assert versions.count("v2") == 10 and versions.count("v1") == 30
        # The version header tells the truth about who answered.
        for row in ROWS[40:48]:
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [row]}]}
            _, headers, out = canary.request("POST", "/v2/models/iris/infer", body)
            assert headers["x-model-version"] == out["model_version"]
        # Every run of 4 holds exactly one challenger answer: an exact fraction, not a random one.
        assert all(versions[i:i + 4].count("v2") == 1 for i in range(0, 40, 4))
        routed = [line for line in canary.metrics().splitlines() if line.startswith("mlops_router_requests_total")
                  and 'outcome="forwarded"' in line]
        assert routed and routed[0].endswith(" 12")
    finally:
        assert canary.stop() == 0


def test_canary_labels_reach_the_side_that_answered(store: Path, challenger: Server) -> None:
    canary = _champion(store, "--route-to", f"http://127.0.0.1:{challenger.port}", "--route-mode", "canary",
                       "--route-weight", "0.5")
    try:
        before = parse_metrics(challenger.metrics()).feedback.labels
        ids = [canary.request("POST", "/v1/models/iris:predict", {"instances": [r]})[2]["ids"][0] for r in ROWS[:20]]
        truth = load_iris().target[::3][:20].tolist()
        status, _, resp = canary.request("POST", "/v1/models/iris/feedback",
                                         {"feedback": [{"id": i, "label": t} for i, t in zip(ids, truth)]})
        assert status == 200 and resp["accepted"] == 20 and resp["unknown"] == [], resp
        assert parse_metrics(challenger.metrics()).feedback.labels - before == 10
        assert parse_metrics(canary.metrics()).feedback.labels == 10
        status, _, resp = canary.request("POST", "/v1/models/iris/feedback", {"feedback": [{"id": "nope-1:0", "label": 0}]})
        assert status == 200 and resp["accepted"] == 0 and resp["unknown"] == ["nope-1:0"]
    finally:
        assert canary.stop() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_canary_with_an_unreachable_challenger_fails_no_request(store: Path) -> None:
    canary = _champion(store, "--route-to", f"http://127.0.0.1:{_free_port()}", "--route-mode", "canary",
                       "--route-weight", "1", "--route-timeout-seconds", "0.5")
    try:
        for row in ROWS[:10]:
            assert _infer(canary, row)["model_version"] == "v1"
        fallback = [line for line in canary.metrics().splitlines() if 'outcome="fallback"' in line]
        assert fallback and fallback[0].endswith(" 10")
    finally:
        assert canary.stop() == 0


@pytest.mark.parametrize("flags,message", [
    (["--route-to", "ftp://x"], "--route-to must be a base URL"),
    (["--route-to", "http://x", "--route-weight", "1.5"], "--route-weight must be between 0 and 1"),
    (["--route-to", "http://x", "--route-mode", "mirror"], "invalid choice"),
])
def test_canary_router_flags_are_checked(store: Path, flags: list[str], message: str) -> None:
    out = run_serve("--store", str(store), "--model", "iris", *flags)
    assert out.returncode == 2 and message in out.stderr


def test_canary_choice_is_an_exact_fraction_for_any_weight() -> None:
    for w in (0.0, 0.1, 0.33, 0.5, 0.9, 1.0):
        r = Router("http://127.0.0.1:1", "canary", w)
        picks = [r.choose() for _ in range(1000)]
        for n in (10, 100, 1000):
            assert abs(sum(picks[:n]) - w * n) < 1


def test_canary_feedback_merge_counts_ids_the_challenger_accepted() -> None:
    champion = {"accepted": 2, "unknown": ["c-1:0", "c-2:0", "x:0", "old:0"], "expired": ["old:0"]}
    challenger = {"accepted": 3, "unknown": ["a-1:0", "a-2:0", "x:0"], "duplicate": ["c-2:0"]}
    merged = merge_feedback(champion, challenger)
    assert merged["accepted"] == 3  # c-1:0 was the challenger's
    assert merged["unknown"] == ["x:0", "old:0"]
    assert merged["duplicate"] == ["c-2:0"]
    assert json.dumps(merged)
