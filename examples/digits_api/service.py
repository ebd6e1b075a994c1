"""The headrace app: the SAM handler unchanged at POST /classify_digit (and its batched form
at POST /classify_digits), a plain JSON route at POST /predict_one and a batched one at
POST /predict (the body: 64 pixel values), all serving digits@production."""

import numpy as np

from headrace import App
from headrace.serving.model import current_model

app = App("digits-api")

app.function("app.lambda_handler", name="inference", timeout=10)
app.http("POST /classify_digit", "inference", model="digits@production", model_env="MODEL_PATH")

# the SAM handler's batched form: API Gateway events in, proxy responses out, one predict call
app.function("app.lambda_batch_handler", name="inference_batch", timeout=10)
app.http(
    "POST /classify_digits",
    "inference_batch",
    model="digits@production",
    model_env="MODEL_PATH",
    max_batch_size=64,
)


@app.http("POST /predict_one", payload="json", model="digits@production")
@app.function(timeout=10)
def predict_one(body, context):
    """The plain route: one body, one predict call."""
    x = np.asarray(body, dtype=np.float64).reshape(1, -1)
    return {"predicted_label": int(current_model().predict(x)[0])}


@app.http("POST /predict", payload="json", model="digits@production", max_batch_size=64)
@app.function(timeout=10)
def predict(batch, context):
    """Many requests, one predict call: each body is a list of 64 floats."""
    labels = current_model().predict(np.asarray(batch, dtype=np.float64))
    return [{"predicted_label": int(label)} for label in labels]
