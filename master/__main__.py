"""``python -m master``: see :mod:`master.cli`."""

from master.cli import main

if __name__ == "__main__":
    main()
