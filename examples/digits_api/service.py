"""The headrace app: the SAM handler unchanged at POST /classify_digit, and a batched JSON
route at POST /predict (the body: 64 pixel values), both serving digits@production."""

import numpy as np

from headrace import App
from headrace.serving.model import current_model

app = App("digits-api")

app.function("app.lambda_handler", name="inference", timeout=10)
app.http("POST /classify_digit", "inference", model="digits@production", model_env="MODEL_PATH")


@app.http("POST /predict", payload="json", model="digits@production", max_batch_size=64)
@app.function(timeout=10)
def predict(batch, context):
    """Many requests, one predict call: each body is a list of 64 floats."""
    labels = current_model().predict(np.asarray(batch, dtype=np.float64))
    return [{"predicted_label": int(label)} for label in labels]
