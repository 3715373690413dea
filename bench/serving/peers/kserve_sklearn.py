"""KServe peer: the SDK's Model/ModelServer with a joblib load, as KServe documents custom predictors.

This is what KServe's own sklearn server (``kserve/sklearnserver``) does: load
``model.joblib`` once, ``predict`` on ``np.asarray(instances)``.  Run inside the
KServe venv:  python kserve_sklearn.py --model_name heavy --model_dir DIR --http_port 8081
"""

import argparse
import os

import joblib
import kserve
import numpy as np


class SKLearnModel(kserve.Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.model = None
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(os.path.join(self.model_dir, "model.joblib"))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):  # type: ignore[no-untyped-def]
        instances = payload["instances"]
        result = self.model.predict(np.asarray(instances))
        return {"predictions": result.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model_dir)
    kserve.ModelServer().start([model])
