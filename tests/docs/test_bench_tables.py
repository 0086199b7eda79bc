"""``bench/tables.py`` renders a benchmark's JSON with that benchmark's own renderer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.docs.examples import REPO

HOT_PATH = {
    "rows": [
        {
            "rate_per_s": 1000.0,
            "mode": "spread",
            "runs": [
                {
                    "master_us_per_message": 16.4,
                    "workers_us_per_delivery": 24.2,
                    "delivered": 5000,
                    "messages": 5000,
                },
            ],
        },
        {"rate_per_s": 1000.0, "mode": "floor", "floor_us": [5.1]},
    ]
}


def tables(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "bench/tables.py"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_hot_path_json_becomes_its_table(tmp_path: Path) -> None:
    path = tmp_path / "hot_path.json"
    path.write_text(json.dumps(HOT_PATH))
    result = tables(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:6] == [
        "| msgs/s | targets | master µs/msg | workers µs/delivery | delivered | floor µs/wake-up |",
        "|---|---|---|---|---|---|",
        "| 1,000 (spread) | master ≤ 25 | 16.4 | 24.2 | 5000/5000 |  |",
        "| 1,000 |  |  |  |  | 5.1 |",
    ]


def test_an_unknown_json_is_refused_with_the_known_names(tmp_path: Path) -> None:
    path = tmp_path / "mystery.json"
    path.write_text("{}")
    result = tables(path)
    assert result.returncode == 1
    assert "peers.json, scaling.json, hot_path.json, ten_thousand.json" in result.stderr
