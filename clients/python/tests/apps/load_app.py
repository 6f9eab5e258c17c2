"""The FastAPI app of the load test and the overhead benchmark.

MLWATCH_COLLECTOR_URL: the collector; MLWATCH_MIDDLEWARE=0 serves the same
app without the middleware (the benchmark's baseline).
"""

import dataclasses
import os

from fastapi import FastAPI
from pydantic import BaseModel

import mlwatch

monitor = mlwatch.Monitor(os.environ["MLWATCH_COLLECTOR_URL"], model="load", model_version="v1")
app = FastAPI()
if os.environ.get("MLWATCH_MIDDLEWARE", "1") == "1":
    app.add_middleware(mlwatch.MlwatchMiddleware, monitor=monitor, paths=["/predict"])


class Request(BaseModel):
    amount: float
    country: str


@app.post("/predict")
async def predict(req: Request) -> dict:
    score = min(1.0, req.amount / 1000.0)
    return {"score": score, "label": "1" if score > 0.5 else "0"}


@app.post("/mlwatch/flush")
def flush() -> dict:
    monitor.flush(120)
    return dataclasses.asdict(monitor.stats())
