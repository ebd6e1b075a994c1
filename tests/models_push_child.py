"""A process that pushes versions of one model once a start file appears, for the test of
concurrent pushes: python -m tests.models_push_child LEDGER_URL STORE CACHE WRITER COUNT GO"""

import json
import sys
import time
from pathlib import Path

from headrace.ledger import Ledger
from headrace.models import ModelRegistry
from headrace.storage import ObjectStore


def main() -> None:
    ledger_url, store, cache, writer, count, go = sys.argv[1:]
    registry = ModelRegistry(Ledger(ledger_url), ObjectStore(store), cache_dir=cache)
    deadline = time.time() + 60
    while not Path(go).exists() and time.time() < deadline:
        time.sleep(0.005)
    pushed = [
        registry.push("shared", {"writer": int(writer), "n": n}, tags={"writer": writer}).version
        for n in range(int(count))
    ]
    print(json.dumps(pushed))
    registry.close()


if __name__ == "__main__":
    main()
