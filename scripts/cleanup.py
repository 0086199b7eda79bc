"""Remove stale socket.io keys left by dead nodes; same as the ``sio-cleanup`` command.

python scripts/cleanup.py --redis-url redis://127.0.0.1:6379/0 [--prefix socket.io] [--dry-run]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sio_cluster.legacy_store.cleanup_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
