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


def lambda_handler(event, context):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        x = _features(base64.b64decode(body))
    else:
        data = json.loads(body)
        if isinstance(data, dict):
            x = _features(base64.b64decode(data["image"]))
        else:
            x = np.asarray(data, dtype=np.float64).reshape(1, -1)
    predicted_label = int(model.predict(x)[0])
    return {"statusCode": 200, "body": json.dumps({"predicted_label": predicted_label})}
