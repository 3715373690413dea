"""The benchmark's two models, trained by whichever interpreter runs this file.

    python bench/serving/models.py OUT_DIR      # PYTHONPATH=<repo>/operator

heavy = RandomForestClassifier(100 trees), light = LogisticRegression, both on
``make_classification(20000, 20, random_state=0)`` behind the trainer's kind of
ColumnTransformer (median imputer + standard scaler).  Written to ``OUT_DIR``:

* ``store/bench/<model>/v1/``: a store version for our server: ``model.skops``
  and, when it verifies as the trainer's does, ``model.onnx``;
* ``peers/<model>/model.joblib`` (+ ``model-settings.json`` for MLServer) for the peers;
* ``X.npy``: 200 held-out rows the requests are made of; ``expected.json``: the
  pipeline's predictions for the first 5, which every server must return.

Run by each scikit-learn the bench compares (ours and the peers'), once per
version: the output folder is named after it and reused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODELS = ("heavy", "light")


def build(out: Path) -> None:
    import joblib
    import numpy as np
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops_operator.drift.profile import Reference, build_reference
    from mlops_operator.runtime.compiled import COMPILED_FILE, reference_rows
    from mlops_operator.runtime.onnx_conversion import compile_pipeline
    from mlops_operator.store import ModelStore

    X, y = make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)
    X = X.astype(np.float64)
    train, test = slice(0, 19800), slice(19800, None)
    store = ModelStore(out / "store")
    names = [f"f{i}" for i in range(20)]
    expected = {}
    for name, est in (
        ("heavy", RandomForestClassifier(n_estimators=100, random_state=0)),
        ("light", LogisticRegression(max_iter=1000)),
    ):
        prepare = ColumnTransformer(
            [("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), list(range(20)))],
            remainder="drop", sparse_threshold=0.0,
        )
        pipe = Pipeline([("prepare", prepare), ("model", est)]).fit(X[train], y[train])
        reference = build_reference({n: X[train][:, i] for i, n in enumerate(names)}, set(), pipe.predict(X[train]), "classification")
        compiled = compile_pipeline(pipe, X[test], "classification", reference_rows(Reference.from_dict(reference), names))
        meta = {
            "model": name, "version": "v1", "namespace": "bench", "task": "classification", "target": "y",
            "features": [{"name": n, "dtype": "float64", "kind": "numeric"} for n in names],
            "classes": [int(c) for c in pipe.classes_], "metrics": {}, "baseline": {"errorRate": 0.1},
            "compiled": compiled.info,
        }
        extra = {COMPILED_FILE: compiled.data} if compiled.data is not None else None
        store.write_version("bench", name, "v1", sio.dumps(pipe), meta, reference, extra)
        mdir = out / "peers" / name
        mdir.mkdir(parents=True, exist_ok=True)
        joblib.dump(pipe, mdir / "model.joblib")
        (mdir / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"},
        }))
        expected[name] = pipe.predict(X[test][:5]).tolist()
        print(f"{name}: compiled {compiled.info['status']} {compiled.info.get('reason') or ''}", file=sys.stderr)
    np.save(out / "X.npy", X[test])
    (out / "expected.json").write_text(json.dumps(expected))
    (out / ".done").write_text("")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
