"""Post digits to a running `headrace serve`: PNG images made from scikit-learn's bundled
digits (as `curl --data-binary @digit.png` does) and the same digits as JSON."""

import io
import json
import sys

import httpx
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def png(pixels: np.ndarray) -> bytes:
    image = Image.fromarray((pixels.reshape(8, 8) / 16.0 * 255.0).round().astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    digits = load_digits()
    right = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(count):
            pixels, label = digits.data[1500 + i], int(digits.target[1500 + i])
            r = client.post(
                "/classify_digit/", content=png(pixels), headers={"content-type": "image/png"}
            )
            r.raise_for_status()
            by_png = r.json()["predicted_label"]
            r = client.post("/classify_digit", content=json.dumps(pixels.tolist()))
            by_json = r.json()["predicted_label"]
            right += by_png == label
            print(f"digit {label}: PNG -> {by_png}, JSON -> {by_json}")
    print(f"{right}/{count} PNGs classified right")


if __name__ == "__main__":
    main()
