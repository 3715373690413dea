"""Model store on s3:// against a folder (what a pvc:// claim is inside a pod), same machine, same run.

    python bench/store/store_bench.py --rounds 5

The heavy benchmark model (RandomForest of 100 trees on make_classification(20000, 20),
as in bench/serving) is written, read back and served from both stores in
interleaved rounds; medians are reported.  The S3 server is SeaweedFS on
127.0.0.1 (tests/s3server.py, from the test extra), so the network cost is
loopback only: a remote bucket adds its round trips and bandwidth.

- upload: ``write_version`` (every object, then the manifest; the folder: files, fsync, rename);
- download: what a server does before it loads (S3: copy every file to its own
  disk with sha256 checks; folder: read and hash the model file);
- cold start: ``mlops-operator serve`` spawned until ``/v2/health/ready`` answers 200.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]


def heavy_model() -> tuple[bytes, dict, dict]:
    import numpy as np
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops_operator.drift.profile import build_reference

    X, y = make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)
    X = X.astype(np.float64)
    prepare = ColumnTransformer([("numeric", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
                                  list(range(20)))], remainder="drop", sparse_threshold=0.0)
    pipe = Pipeline([("prepare", prepare), ("model", RandomForestClassifier(n_estimators=100, random_state=0))]).fit(X, y)
    names = [f"f{i}" for i in range(20)]
    reference = build_reference({n: X[:, i] for i, n in enumerate(names)}, set(), pipe.predict(X), "classification")
    meta = {"model": "heavy", "namespace": "bench", "task": "classification", "target": "y",
            "features": [{"name": n, "dtype": "float64", "kind": "numeric"} for n in names],
            "classes": [int(c) for c in pipe.classes_], "metrics": {}, "baseline": {"errorRate": 0.1}}
    return sio.dumps(pipe), meta, reference


def cold_start(store: str, version: str, env: dict[str, str], timeout: float = 120.0) -> float:
    """Seconds from spawning ``serve`` until it is ready (model downloaded, verified, loaded, warmed up)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mlops_operator.cli", "serve", "--store", store, "--namespace", "bench",
                             "--model", "heavy", "--version", version, "--port", "0", "--no-feedback"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = None
        deadline = time.monotonic() + timeout
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}")
            if m := re.search(r"on http://[\d.]+:(\d+)", line):
                port = int(m.group(1))
        while time.monotonic() < deadline:  # it prints once installed; ready must answer 200 too
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("serve did not become ready")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    from mlops_operator.store import ModelStore, open_store
    from tests.s3server import running_s3

    model_bytes, meta, reference = heavy_model()
    print(f"heavy model: {len(model_bytes) / 1e6:.1f} MB (skops)", flush=True)
    with tempfile.TemporaryDirectory() as tmp, running_s3(Path(tmp) / "seaweedfs") as s3:
        os.environ.update(s3.env())
        env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), "MLOPS_MODEL_CACHE": str(Path(tmp) / "cache")}
        bucket = s3.new_bucket("bench")
        stores = {"file": ModelStore(Path(tmp) / "folder"), "s3": open_store(f"s3://{bucket}/models")}
        locations = {"file": str(Path(tmp) / "folder"), "s3": f"s3://{bucket}/models"}
        times: dict[str, dict[str, list[float]]] = {k: {"upload": [], "download": [], "cold start": []} for k in stores}
        for r in range(args.rounds):
            version = f"v{r}"
            for kind, store in stores.items():
                t = time.perf_counter()
                store.write_version("bench", "heavy", version, model_bytes, meta, reference)
                times[kind]["upload"].append(time.perf_counter() - t)
                t = time.perf_counter()
                if kind == "s3":
                    store.download_version("bench", "heavy", version, Path(tmp) / f"dl-{r}")
                else:
                    data = (store.version_dir("bench", "heavy", version) / "model.skops").read_bytes()
                    hashlib.sha256(data).hexdigest()
                times[kind]["download"].append(time.perf_counter() - t)
                times[kind]["cold start"].append(cold_start(locations[kind], version, env))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n| step | folder (pvc://, file://) | s3:// (SeaweedFS, loopback) | s3 / folder |\n|---|---|---|---|")
    for step in ("upload", "download", "cold start"):
        f, s = statistics.median(times["file"][step]), statistics.median(times["s3"][step])
        print(f"| {step} | {f * 1000:.0f} ms | {s * 1000:.0f} ms | {s / f:.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
