"""Child of test_streams_crash: runs the pipeline over the log until done (or killed)."""

from __future__ import annotations

import sys
from pathlib import Path

from headrace.ledger import Ledger
from headrace.streams.log import open_log
from headrace.streams.pipeline import Pipeline
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import SinkContext, StreamSink
from tests.stream_helpers import fee_windows


def main(root: Path) -> None:
    streams = {
        name: open_log(str(root / "streams"), name) for name in ("events", "windows", "late")
    }
    ledger = Ledger(f"sqlite:///{root / 'ledger.db'}")
    pipe = Pipeline("crash", "events", batch_size=5_000)
    pipe.dedup("id", ttl=600, time_column="ts")
    fee_windows(pipe, late=StreamSink("late"))
    pipe.to_stream("windows")
    context = SinkContext("crash", 0, ledger=ledger, open_log=streams.__getitem__)
    runner = PartitionRunner(pipe, 0, log=streams["events"], ledger=ledger, context=context)
    runner.open()
    runner.run_until_caught_up()
    runner.flush()
    (root / "done").write_text(str(runner.status.records))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
