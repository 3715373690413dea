"""Bare FastAPI + uvicorn baseline: KServe V1 predict, no validation, no batching.

Run inside the FastAPI venv:  python fastapi_baseline.py MODEL_DIR NAME PORT
"""

import os
import sys

import joblib
import numpy as np
import uvicorn
from fastapi import FastAPI, Request

model_dir, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = joblib.load(os.path.join(model_dir, "model.joblib"))
app = FastAPI()


@app.get("/v1/models/{model_name}")
def ready(model_name: str) -> dict:
    return {"name": name, "ready": True}


@app.post("/v1/models/{model_name}:predict")
async def predict(model_name: str, request: Request) -> dict:
    body = await request.json()
    return {"predictions": model.predict(np.asarray(body["instances"])).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, workers=1)
