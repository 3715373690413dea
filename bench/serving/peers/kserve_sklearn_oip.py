"""KServe peer for the V2 (Open Inference Protocol) rows: REST V2, its binary extension, and gRPC.

The same joblib load as ``kserve_sklearn.py``; ``predict`` takes what KServe's
own sklearn server takes (``get_predict_input``: a V1 dict or a V2
InferRequest) and answers as it does (``get_predict_response``).  Run inside
the KServe venv:  python kserve_sklearn_oip.py --model_name heavy --model_dir DIR --http_port P --grpc_port G
"""

import argparse
import os

import joblib
import kserve
from kserve.utils.utils import get_predict_input, get_predict_response


class SKLearnModel(kserve.Model):
    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.model = joblib.load(os.path.join(model_dir, "model.joblib"))
        self.ready = True

    def predict(self, payload, headers=None):  # type: ignore[no-untyped-def]
        result = self.model.predict(get_predict_input(payload))
        return get_predict_response(payload, result, self.name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([SKLearnModel(args.model_name, args.model_dir)])
