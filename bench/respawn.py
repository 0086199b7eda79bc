"""How fast a killed worker is back: SIGKILL a worker, time until it accepts connections again.

Runs one master (embedded Redis, 2 workers) through the test harness, kills worker 1
``--kills`` times (waiting out the crash-loop window between kills so each respawn is
immediate, as for a first death), prints a table and writes JSON.

    python scripts/bench_respawn.py --kills 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from master.supervisor import STABLE_AFTER  # noqa: E402
from tests.cluster import MasterProcess  # noqa: E402


async def measure(kills: int) -> list[float]:
    master = MasterProcess(None, workers=2).start()
    try:
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
    finally:
        master.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--json", default="bench-respawn.json")
    args = parser.parse_args()
    seconds = asyncio.run(measure(args.kills))
    print("| kills | min s | median s | max s |")
    print("|---|---|---|---|")
    print(
        f"| {len(seconds)} | {min(seconds):.3f} | {statistics.median(seconds):.3f} "
        f"| {max(seconds):.3f} |"
    )
    Path(args.json).write_text(json.dumps({"respawn_seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
