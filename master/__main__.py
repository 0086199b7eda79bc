"""``python -m master``: see :mod:`master.cli`."""

from master.cli import entry

if __name__ == "__main__":
    entry()
