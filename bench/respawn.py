"""How fast a killed worker is back: SIGKILL a worker, time until it accepts connections again.

Runs one master (embedded Redis, 2 workers) through the test harness, kills worker 1
``--kills`` times (waiting out the crash-loop window between kills so each respawn is
immediate, as for a first death), prints a table and writes JSON.

    python bench/respawn.py --kills 5
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # python bench/respawn.py

from bench.harness import Options, markdown_table, write_json  # noqa: E402
from sio_cluster.master.supervisor import STABLE_AFTER  # noqa: E402
from tests.cluster import MasterProcess  # noqa: E402


async def measure(kills: int) -> list[float]:
    with MasterProcess(None, workers=2).start() as master:
        await master.ready()
        seconds = []
        for i in range(kills):
            pid = master.worker_pids()[1]
            started = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await master.wait_log(r"worker 1 ready again", count=i + 1)
            seconds.append(time.monotonic() - started)
            if i + 1 < kills:
                await asyncio.sleep(STABLE_AFTER + 0.5)  # a bounded pause, not a sync point
        return seconds


def main() -> None:
    options = Options(__doc__, quick={"kills": 1})
    options.add_argument("--kills", type=int, default=5)
    args = options.parse()
    seconds = asyncio.run(measure(args.kills))
    spread = (min(seconds), statistics.median(seconds), max(seconds))
    row = [len(seconds), *(f"{s:.3f}" for s in spread)]
    print(markdown_table(["kills", "min s", "median s", "max s"], [row]))
    write_json(args.out, "respawn", {"respawn_seconds": seconds})


if __name__ == "__main__":
    main()
