"""``python -m sio_cluster``: the same program as ``sio-master`` (:mod:`master.cli`)."""

from sio_cluster.master.cli import entry

if __name__ == "__main__":
    entry()
