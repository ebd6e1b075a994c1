"""examples/digits_api: train and push, serve the SAM handler unchanged, its batched form and
the JSON routes with 2 replicas; the client's PNGs and JSON get the same labels everywhere."""

import base64
import concurrent.futures as futures
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("httptools")
pytest.importorskip("sklearn")
pytest.importorskip("PIL")


@pytest.mark.slow
def test_digits_api_example(tmp_path):
    folder = tmp_path / "digits_api"
    shutil.copytree(
        ROOT / "examples" / "digits_api", folder, ignore=shutil.ignore_patterns(".headrace")
    )
    run = subprocess.run(
        [sys.executable, "train.py"], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "as digits@production" in run.stdout
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = folder / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "headrace.cli", "serve", "--port", str(port)],
            cwd=folder,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while "serving " not in log.read_text() and time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "with 2 replicas, model digits:1" in log.read_text()
        client = subprocess.run(
            [sys.executable, "client.py", url, "10"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        right = int(client.stdout.strip().splitlines()[-1].split("/")[0])
        assert right >= 8, client.stdout

        sys.path.insert(0, str(folder))
        try:
            from client import png
        finally:
            sys.path.remove(str(folder))
        from sklearn.datasets import load_digits

        digits = load_digits()
        rows = digits.data[1500:1540]
        with httpx.Client(base_url=url, timeout=60) as c, futures.ThreadPoolExecutor(16) as pool:

            def labels(path: str, body) -> list[int]:
                def one(row) -> int:
                    r = c.post(path, **body(row))
                    assert r.status_code == 200, r.text
                    return r.json()["predicted_label"]

                return list(pool.map(one, rows))

            as_json = lambda row: {"content": json.dumps(row.tolist())}  # noqa: E731
            as_png = lambda row: {  # noqa: E731
                "content": png(row),
                "headers": {"content-type": "image/png"},
            }
            as_png_json = lambda row: {  # noqa: E731
                "json": {"image": base64.b64encode(png(row)).decode()}
            }
            sam = labels("/classify_digit", as_json)
            assert labels("/predict_one", as_json) == sam
            assert labels("/predict", as_json) == sam
            assert labels("/classify_digits", as_json) == sam  # concurrent: batched
            pngs = labels("/classify_digit", as_png)
            assert labels("/classify_digits", as_png) == pngs
            assert labels("/classify_digits", as_png_json) == pngs
            assert sum(a == b for a, b in zip(sam, digits.target[1500:1540], strict=True)) >= 35
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
