"""A route bound to digits@production, for the roll-over tests."""

import os

import numpy as np

from headrace import App
from headrace.serving.model import current_model, current_version

app = App("serving-model-tests")


def classify(batch, context):
    model = current_model()
    labels = model.predict(np.asarray(batch, dtype=np.float64))
    return [{"label": int(x), "model": current_version()} for x in labels]


app.http("POST /classify", classify, payload="json", model="digits@production", max_batch_size=16)


def which(event, context):
    return {"model": current_version(), "file": os.environ.get("MODEL_FILE")}


app.http("GET /which", which, model="digits@production", model_env="MODEL_FILE")
