"""The filesystem model store: atomic versions, digests, and the skops type allow-list."""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format
import pytest
import scipy.io
import skops.io as sio
import sklearn.datasets
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from mlops_operator.store import (
    METADATA_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    ArtifactError,
    ModelStore,
    VersionNotFound,
    is_trusted_type,
    load_skops_bytes,
    sha256_hex,
)
from mlops_operator.store import filesystem


@pytest.fixture()
def fitted() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return LogisticRegression().fit(X, y)


def _write(store: ModelStore, model: object, version: str = "v1", **meta: object):
    return store.write_version("ns", "m", version, sio.dumps(model), {"model": "m", "version": version, **meta}, {"features": {}})


def test_write_and_load_roundtrip(tmp_path: Path, fitted: LogisticRegression) -> None:
    store = ModelStore(tmp_path)
    res = _write(store, fitted)
    assert res.created and res.path == tmp_path / "ns" / "m" / "v1"
    assert sorted(p.name for p in res.path.iterdir()) == [METADATA_FILE, MODEL_FILE, REFERENCE_FILE]
    meta = store.read_metadata("ns", "m", "v1")
    assert meta["format"] == 1
    assert meta["sha256"][MODEL_FILE] == sha256_hex((res.path / MODEL_FILE).read_bytes())
    assert store.read_reference("ns", "m", "v1") == {"features": {}}
    loaded = store.load_model("ns", "m", "v1", expected_sha256="sha256:" + meta["sha256"][MODEL_FILE])
    X = np.linspace(-2, 2, 30).reshape(10, 3)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    assert store.list_versions("ns", "m") == ["v1"]
    assert store.uri("ns", "m", "v1").startswith("file://")


def test_idempotent_rewrite_leaves_existing_version(tmp_path: Path, fitted: LogisticRegression) -> None:
    store = ModelStore(tmp_path)
    first = _write(store, fitted, marker="first")
    before = (first.path / MODEL_FILE).read_bytes()
    second = _write(store, LogisticRegression(C=0.1).fit([[0], [1]], [0, 1]), marker="second")
    assert not second.created
    assert second.metadata["marker"] == "first"
    assert (first.path / MODEL_FILE).read_bytes() == before
    assert store.list_versions("ns", "m") == ["v1"]


def test_crash_mid_write_leaves_no_version(tmp_path: Path, fitted: LogisticRegression, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path)
    calls = {"n": 0}
    real_fsync = os.fsync

    def crash_on_second_file(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        real_fsync(fd)

    monkeypatch.setattr(filesystem.os, "fsync", crash_on_second_file)
    with pytest.raises(OSError, match="simulated"):
        _write(store, fitted)
    monkeypatch.undo()
    assert not store.exists("ns", "m", "v1")
    assert store.list_versions("ns", "m") == []
    assert list((tmp_path / "ns" / "m").iterdir()) == []  # the temporary directory is gone too
    # A retry after the crash succeeds.
    assert _write(store, fitted).created


def test_killed_writer_leftovers_are_invisible(tmp_path: Path, fitted: LogisticRegression) -> None:
    """A process killed before the rename leaves only a hidden temp dir, which readers ignore."""
    store = ModelStore(tmp_path)
    leftover = tmp_path / "ns" / "m" / ".tmp-v1-abc"
    leftover.mkdir(parents=True)
    (leftover / MODEL_FILE).write_bytes(b"half")
    assert store.list_versions("ns", "m") == []
    with pytest.raises(VersionNotFound):
        store.read_metadata("ns", "m", "v1")
    os.utime(leftover, (0, 0))  # old: the next writer removes it
    assert _write(store, fitted).created
    assert not leftover.exists()


def test_sha256_mismatch_refuses_to_load(tmp_path: Path, fitted: LogisticRegression) -> None:
    store = ModelStore(tmp_path)
    res = _write(store, fitted)
    with pytest.raises(ArtifactError, match="expected"):
        store.load_model("ns", "m", "v1", expected_sha256="0" * 64)
    other = sio.dumps(LogisticRegression(C=3.0).fit([[0], [1]], [0, 1]))
    (res.path / MODEL_FILE).write_bytes(other)
    with pytest.raises(ArtifactError, match="metadata.json says"):
        store.load_model("ns", "m", "v1")


def test_metadata_without_digest_is_refused(tmp_path: Path, fitted: LogisticRegression) -> None:
    store = ModelStore(tmp_path)
    res = _write(store, fitted)
    meta = json.loads((res.path / METADATA_FILE).read_text())
    del meta["sha256"]
    (res.path / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="no sha256"):
        store.load_model("ns", "m", "v1")


def test_untrusted_custom_class_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _write(store, FunctionTransformer(func=_custom_function))
    with pytest.raises(ArtifactError, match="test_store._custom_function"):
        store.load_model("ns", "m", "v1")
    # Trusting the module explicitly (an operator's allowed module) is the only way in.
    package = __name__.split(".")[0] + "."
    model = store.load_model("ns", "m", "v1", trusted_modules=(package,))
    assert model.func is _custom_function or model.func.__name__ == "_custom_function"
    assert ModelStore(tmp_path, trusted_modules=(package,)).load_model("ns", "m", "v1").func.__name__ == "_custom_function"


def _custom_function(x: object) -> object:
    return x


DANGEROUS_FUNCTIONS = [numpy.lib.format.open_memmap, scipy.io.savemat, sklearn.datasets.fetch_openml, builtins.eval, os.system]
"""Functions inside the packages a model is made of (or the ones every Python has) that read,
write, download or run: a prefix allow-list let the first three through."""

EVERY_PREFIX = ("sklearn.", "numpy.", "scipy.", "builtins.", "os.", "posix.")
"""Even an operator that allows these modules (the chart passes ``sklearn.``) does not reopen them."""


@pytest.mark.parametrize("func", DANGEROUS_FUNCTIONS, ids=lambda f: f.__name__)
def test_functions_in_a_skops_file_are_refused_by_name(tmp_path: Path, func: Any) -> None:
    store = ModelStore(tmp_path)
    _write(store, FunctionTransformer(func=func))
    name = f"{func.__module__}.{func.__name__}"  # how skops names it: posix.system, scipy.io.matlab._mio.savemat
    for extra in ((), EVERY_PREFIX):
        with pytest.raises(ArtifactError, match=rf"untrusted type\(s\) {re.escape(name)}; "):
            store.load_model("ns", "m", "v1", trusted_modules=extra)
        with pytest.raises(ArtifactError, match=re.escape(name)):
            load_skops_bytes(sio.dumps(FunctionTransformer(func=func)), extra)


@pytest.mark.parametrize(("module", "cls"), [("numpy", "memmap"), ("subprocess", "Popen"), ("builtins", "open")])
def test_a_crafted_class_reference_is_refused_by_name(tmp_path: Path, module: str, cls: str) -> None:
    """A file edited by hand so that an object claims a dangerous class is refused before anything is built."""
    crafted = _retarget(sio.dumps(StandardScaler()), module, cls)
    with pytest.raises(ArtifactError, match=rf"untrusted type\(s\) {module}\.{cls}; "):
        load_skops_bytes(crafted, EVERY_PREFIX)


def _retarget(data: bytes, module: str, cls: str) -> bytes:
    """The skops bytes with the top-level object's class replaced."""
    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename == "schema.json":
                schema = json.loads(content)
                schema["__module__"], schema["__class__"] = module, cls
                content = json.dumps(schema).encode()
            dst.writestr(item, content)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "extra", "ok"),
    [
        ("sklearn.tree._tree.Tree", (), True),
        ("sklearn.neighbors._kd_tree.KDTree", (), True),
        ("numpy.dtype", (), True),
        ("sklearn.datasets._openml.fetch_openml", ("sklearn.",), False),
        ("numpy.lib.format.open_memmap", ("numpy",), False),
        ("scipy.io.matlab._mio.savemat", ("scipy.",), False),
        ("collections.OrderedDict", ("collections.",), False),
        ("builtins.eval", ("builtins.",), False),
        ("posix.system", ("posix.",), False),
        ("subprocess.Popen", ("subprocess.",), False),
        ("sklearnx.Evil", ("sklearn",), False),
        ("lightgbm.sklearn.LGBMClassifier", (), False),
        ("lightgbm.sklearn.LGBMClassifier", ("lightgbm",), True),
        ("lightgbm.basic.Booster", ("lightgbm.",), True),
        ("lightgbm.compat.load", ("lightgbm.",), False),
    ],
)
def test_type_allow_list(name: str, extra: tuple[str, ...], ok: bool) -> None:
    assert is_trusted_type(name, extra) is ok


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", ".hidden", "", "x" * 300])
def test_path_components_are_checked(tmp_path: Path, bad: str) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(ValueError):
        store.version_dir("ns", "m", bad)


def test_missing_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.list_versions("ns", "m") == []
    with pytest.raises(VersionNotFound):
        store.load_model("ns", "m", "nope")
