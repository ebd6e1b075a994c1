"""Child of test_streams_source_positions: the coordinator's stream side polls a file source
once and is killed (SIGKILL, no cleanup) at the point named on the command line."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from headrace.ledger import source_positions
from headrace.server import streams
from tests.test_streams_source_positions import make_service


def _die(*args: object, **kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(root: Path, where: str) -> None:
    if where == "before-delivery":  # the poll is written down, nothing appended yet
        streams.StreamService.publish = _die  # type: ignore[method-assign]
    elif where == "after-delivery":  # every record appended, the poll not yet cleared
        source_positions.finish_poll = _die  # type: ignore[assignment]
    service, spec, _ = make_service(root)
    service.poll_source(spec)
    raise SystemExit("the poll returned: nothing killed it")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
