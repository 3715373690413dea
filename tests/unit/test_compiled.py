"""The compiled inference path (runtime/compiled.py): verified at training time, served by default.

Every estimator recipe of the trainer's allowed list (runtime/type_survey.py:
each scikit-learn classifier and regressor it trains, plus the variants that
change what a model holds) is trained through the real ``train``; the version
is loaded the way the server loads it, and the compiled model is compared
with the skops model on the run's held-out rows.  A recipe that does not
compile is served from skops with its reason visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_operator.runtime import compiled, type_survey
from mlops_operator.runtime.compiled import COMPILED_FILE, PROBA_ATOL, VALUE_RTOL, CompiledError, check_onnx
from mlops_operator.runtime.model_loading import LoadedModel, load_model
from mlops_operator.runtime.trainer import TrainResult, train
from mlops_operator.store import MODEL_FILE, ModelStore

from .test_server_support import Server

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

RECIPES = type_survey.recipes()
MUST_COMPILE = {
    # The common estimators, the bench's heavy and light models among them: a converter or
    # precision change that stops them compiling is a regression users would see as latency.
    "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "GradientBoostingClassifier",
    "GradientBoostingRegressor", "DecisionTreeClassifier", "DecisionTreeRegressor", "LogisticRegression",
    "LinearRegression", "Ridge", "SVC", "SVR", "KNeighborsClassifier", "GaussianNB", "MLPClassifier",
}


def quiet(*args: Any, **kwargs: Any) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, TrainResult | Exception]]:
    root = tmp_path_factory.mktemp("store")
    store = ModelStore(root)
    out: dict[str, TrainResult | Exception] = {}
    for i, recipe in enumerate(RECIPES):
        try:
            out[recipe.id] = train(recipe.manifest(), store, version=f"v{i}", log=quiet)
        except Exception as exc:  # the trainer refuses a few recipes; test_trusted_types covers which
            out[recipe.id] = exc
    return root, out


def _load(root: Path, result: TrainResult) -> LoadedModel:
    return load_model(str(root), result.namespace, result.model, result.version, result.sha256)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.id for r in RECIPES])
def test_compiled_model_predicts_like_skops_or_skops_serves_with_a_reason(
    recipe: type_survey.Recipe, trained: tuple[Path, dict[str, TrainResult | Exception]]
) -> None:
    root, results = trained
    result = results[recipe.id]
    if isinstance(result, Exception):
        pytest.skip(f"the trainer refuses this recipe: {result}")
    info = result.metadata["compiled"]
    loaded = _load(root, result)
    onnx_file = result.path / COMPILED_FILE
    if info["status"] != "Verified":
        assert not onnx_file.exists() and COMPILED_FILE not in result.metadata["sha256"]
        assert info["reason"]
        assert loaded.inference == "skops" and info["reason"] in (loaded.inference_reason or "")
        assert loaded.pipeline is loaded.skops_pipeline
        assert recipe.id not in MUST_COMPILE, info["reason"]
        return
    assert onnx_file.is_file() and result.metadata["sha256"][COMPILED_FILE]
    assert loaded.inference == "onnx" and loaded.inference_reason is None
    X = result.X_test
    assert X is not None and len(X) > 0
    skops = loaded.skops_pipeline
    got, got_proba = loaded.predict(X, hasattr(skops, "predict_proba"))
    want = skops.predict(X)
    if result.task == "classification":
        assert got.tolist() == want.tolist()  # the same classes, of the same type, on every held-out row
        assert got.dtype == np.asarray(want).dtype
        if hasattr(skops, "predict_proba"):
            assert got_proba is not None
            dev = float(np.max(np.abs(got_proba - skops.predict_proba(X))))
            assert dev <= PROBA_ATOL
            assert dev <= info["maxDeviation"]["probabilities"] + 1e-12  # the recorded figure covers these rows
    else:
        rel = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        assert float(rel.max()) <= VALUE_RTOL
        assert float(rel.max()) <= info["maxDeviation"]["relative"] + 1e-12
    assert info["rows"] >= len(X) and info["tolerance"] == compiled.tolerance()


def test_the_common_estimators_compile(trained: tuple[Path, dict[str, TrainResult | Exception]]) -> None:
    _, results = trained
    status = {k: r.metadata["compiled"]["status"] for k, r in results.items() if not isinstance(r, Exception)}
    assert {k for k in MUST_COMPILE if status.get(k) != "Verified"} == set()


def test_a_model_the_converter_cannot_take_names_the_reason(trained: tuple[Path, dict[str, TrainResult | Exception]]) -> None:
    _, results = trained
    result = results["KernelRidge"]
    assert not isinstance(result, Exception)
    info = result.metadata["compiled"]
    assert info["status"] == "Unsupported" and info["reason"].startswith("skl2onnx cannot convert it")
    shop = results["DecisionTreeClassifier[numeric mean/minmax, categorical constant/ordinal]"]
    assert not isinstance(shop, Exception)
    assert "categorical" in shop.metadata["compiled"]["reason"]


def _copy_version(store: ModelStore, src: TrainResult, version: str, onnx_bytes: bytes, compiled_info: dict[str, Any]) -> None:
    meta = {k: v for k, v in src.metadata.items() if k not in ("format", "sha256")}
    meta["compiled"] = compiled_info
    reference = store.read_reference(src.namespace, src.model, src.version)
    store.write_version(src.namespace, src.model, version, (src.path / MODEL_FILE).read_bytes(), meta, reference,
                        {COMPILED_FILE: onnx_bytes})


def test_a_compiled_model_that_disagrees_with_skops_is_not_served(trained: tuple[Path, dict[str, TrainResult | Exception]]) -> None:
    """Another model's ONNX file beside this model.skops (recorded as verified) is caught at start-up."""
    root, results = trained
    forest, other = results["RandomForestClassifier"], results["LogisticRegression"]
    assert not isinstance(forest, Exception) and not isinstance(other, Exception)
    store = ModelStore(root)
    _copy_version(store, forest, "swapped", (other.path / COMPILED_FILE).read_bytes(), forest.metadata["compiled"])
    loaded = load_model(str(root), forest.namespace, forest.model, "swapped", None)
    assert loaded.inference == "skops"
    assert "disagrees with model.skops at start-up" in (loaded.inference_reason or "")


def test_an_altered_compiled_file_is_not_served(trained: tuple[Path, dict[str, TrainResult | Exception]]) -> None:
    root, results = trained
    forest = results["RandomForestClassifier"]
    assert not isinstance(forest, Exception)
    store = ModelStore(root)
    _copy_version(store, forest, "altered", (forest.path / COMPILED_FILE).read_bytes(), forest.metadata["compiled"])
    path = store.version_dir(forest.namespace, forest.model, "altered") / COMPILED_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    loaded = load_model(str(root), forest.namespace, forest.model, "altered", None)
    assert loaded.inference == "skops" and "sha256" in (loaded.inference_reason or "")
    off = load_model(str(root), forest.namespace, forest.model, forest.version, None, compiled=False)
    assert off.inference == "skops" and "--no-compiled" in (off.inference_reason or "")


def _tiny_model(domain: str = "", external: bool = False) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), "w")
    if external:
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"
    node = helper.make_node("MatMul", ["X", "w"], ["Y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])], initializer=[weight])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())


def test_only_standard_self_contained_onnx_loads() -> None:
    check_onnx(_tiny_model())
    with pytest.raises(CompiledError, match="operator domain"):
        check_onnx(_tiny_model(domain="com.example.native"))
    with pytest.raises(CompiledError, match="external files"):
        check_onnx(_tiny_model(external=True))
    with pytest.raises(CompiledError, match="not a readable ONNX model"):
        check_onnx(b"\x00not onnx")


def test_the_server_says_which_path_serves(trained: tuple[Path, dict[str, TrainResult | Exception]]) -> None:
    root, results = trained
    forest, boosted = results["RandomForestClassifier"], results["KernelRidge"]
    assert not isinstance(forest, Exception) and not isinstance(boosted, Exception)
    for result, path in ((forest, "onnx"), (boosted, "skops")):
        s = Server("--store", str(root), "--namespace", result.namespace, "--model", result.model, "--version", result.version)
        try:
            assert any(f"inference {path}" in line for line in s.lines)
            status, _, meta = s.request("GET", f"/v2/models/{result.model}")
            assert status == 200 and meta["parameters"]["inference"] == path
            assert (meta["parameters"]["inference_reason"] is None) == (path == "onnx")
            assert f'inference="{path}"' in s.metrics()
            X = result.X_test
            assert X is not None
            status, _, body = s.request("POST", f"/v1/models/{result.model}:predict", {"instances": X[:10].tolist()})
            assert status == 200 and body["predictions"] == result.pipeline.predict(X[:10]).tolist()
        finally:
            assert s.stop() == 0
