"""`edgekube` with its event loop metered: each callback that takes `LOOP_METER_MS` (3) of CPU or
more is written to the file named by `LOOP_METER_FILE`, one JSON object a line (its monotonic
start, its CPU ms, what ran and where the loop thread was, sampled). Integration tests run the
server through this (`Server(command=...)`) and bound what the loop's callbacks took while they
drove a heavy request class; see tests/support/loopmeter.py for the measure itself.

    python tests/support/loopmeter_server.py server --data-dir ... (edgekube's arguments)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    sys.path.insert(0, str(_REPO))
    from edgekube import cli
    from tests.support.loopmeter import LoopMeter

    out = open(os.environ["LOOP_METER_FILE"], "a", buffering=1)
    threshold = float(os.environ.get("LOOP_METER_MS", "3"))

    def record(t0: float, cpu_ms: float, what: str, where: str) -> None:
        if cpu_ms >= threshold:
            out.write(json.dumps({"t0": t0, "cpu_ms": cpu_ms, "what": what, "where": where}) + "\n")

    with LoopMeter(record=record).on(any_thread=True):
        return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
