"""The AWS SAM scikit-learn inference app, as its template writes it: the model is loaded once
at import, `lambda_handler` answers one API Gateway proxy event.

The body is a PNG image (base64-encoded when isBase64Encoded, as API Gateway hands binary
bodies over) or JSON: 64 pixel values, or {"image": <base64 PNG>}.
"""

import base64
import json
import os
from io import BytesIO

import joblib
import numpy as np
from PIL import Image

model_file = os.environ.get("MODEL_PATH", os.path.join(os.path.dirname(__file__), "digits.joblib"))
model = joblib.load(model_file)


def _features(png: bytes) -> np.ndarray:
    image = Image.open(BytesIO(png)).convert(mode="L").resize((8, 8))
    # the digits data set holds 0..16 intensities
    return (np.asarray(image, dtype=np.float64) / 255.0 * 16.0).reshape(1, -1)


def _event_features(event) -> np.ndarray:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return _features(base64.b64decode(body))
    data = json.loads(body)
    if isinstance(data, dict):
        return _features(base64.b64decode(data["image"]))
    return np.asarray(data, dtype=np.float64).reshape(1, -1)


def lambda_handler(event, context):
    x = _event_features(event)
    predicted_label = int(model.predict(x)[0])
    return {"statusCode": 200, "body": json.dumps({"predicted_label": predicted_label})}


def lambda_batch_handler(events, context):
    """The same handler for a route that opts into batching: a list of events in, a list of
    proxy responses out, one predict call for all of them."""
    labels = model.predict(np.vstack([_event_features(event) for event in events]))
    return [
        {"statusCode": 200, "body": json.dumps({"predicted_label": int(label)})} for label in labels
    ]
