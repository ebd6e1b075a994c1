"""Child of test_streams_changelog: runs a changelog pipeline over the log until done (or killed).

stream_changelog_child.py ROOT KIND run           compacting as often as it can
stream_changelog_child.py ROOT KIND compact-kill  SIGKILL itself inside a compaction's
                                                  transaction, before it commits
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from headrace.ledger import Ledger
from headrace.ledger.checkpoints import compact_changes, load_checkpoint, read_bases, read_changes
from headrace.streams.changelog import by_slot
from headrace.streams.compaction import fold
from headrace.streams.log import open_log
from headrace.streams.runner import PartitionRunner
from headrace.streams.sinks import SinkContext, StreamSink
from tests.stream_helpers import changelog_pipeline


def runner_for(root: Path, kind: str) -> tuple[PartitionRunner, Ledger]:
    streams = {name: open_log(str(root / "streams"), name) for name in ("events", "out", "late")}
    ledger = Ledger(f"sqlite:///{root / 'ledger.db'}")
    pipe = changelog_pipeline(kind, late=StreamSink("late"), batch_size=300)
    pipe.to_stream("out")
    context = SinkContext(pipe.name, 0, ledger=ledger, open_log=streams.__getitem__)
    runner = PartitionRunner(pipe, 0, log=streams["events"], ledger=ledger, context=context)
    return runner, ledger


def main(root: Path, kind: str, mode: str) -> None:
    runner, ledger = runner_for(root, kind)
    if mode == "compact-kill":
        with ledger.reader.connect() as conn:
            upto = load_checkpoint(conn, runner.pipeline.name, 0).seq
            rows = read_changes(conn, runner.pipeline.name, 0, upto)
            deltas = by_slot(rows)
            bases = read_bases(conn, runner.pipeline.name, 0, list(deltas))
        new = fold(rows, deltas, bases)
        with ledger.begin() as conn:
            compact_changes(conn, runner.pipeline.name, 0, [seq for seq, _ in rows], new)
            os.kill(os.getpid(), signal.SIGKILL)
    runner.compactor.min_bytes = 1  # every batch makes a compaction due
    runner.compactor.per_delta = 1
    runner.open()
    runner.run_until_caught_up()
    runner.flush()
    runner.close()
    (root / "done").write_text(str(runner.compactor.compactions))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
