"""KServe peer: what stands in for KServe's sklearn server (``sklearnserver``), which is not published as a package.

It does what ``kserve/python/sklearnserver/sklearnserver/model.py`` does, on the
installed ``kserve`` package's own ``Model``, ``ModelServer`` and request
helpers: load the one ``.joblib``/``.pkl``/``.pickle`` file of ``--model_dir``
with ``joblib`` once; per request ``kserve.utils.utils.get_predict_input(payload)``
(a V1 body's ``instances`` as one numpy array), one ``predict`` call (``predict_proba``
when ``PREDICT_PROBA=true``, as there), and ``get_predict_response``.  What it
leaves out is only ``Storage.download`` (the model is a local folder) and the
custom-transformer hooks.  Run inside the KServe venv (scikit-learn ~1.5.1, the
server's pin):

    python kserve_sklearn.py --model_name heavy --model_dir DIR --http_port 8081
"""

import argparse
import os
from pathlib import Path

import joblib
import kserve
from kserve.errors import InferenceError, ModelMissingError
from kserve.utils.utils import get_predict_input, get_predict_response

MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")


class SKLearnModel(kserve.Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        files = [p for p in Path(self.model_dir).iterdir() if p.is_file() and p.name.endswith(MODEL_EXTENSIONS)]
        if not files:
            raise ModelMissingError(self.model_dir)
        if len(files) > 1:
            raise RuntimeError(f"more than one model file in {self.model_dir}: {files}")
        self._model = joblib.load(files[0])
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):  # type: ignore[no-untyped-def]
        try:
            instances = get_predict_input(payload)
            if os.environ.get("PREDICT_PROBA", "false").lower() == "true" and hasattr(self._model, "predict_proba"):
                result = self._model.predict_proba(instances)
            else:
                result = self._model.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as e:
            raise InferenceError(str(e))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnModel(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])
