"""What a patch says when the installed dependency does not do what it relies on.

Every message names the dependency and its installed version, so an operator sees at once
which upgrade broke which patch.
"""

from __future__ import annotations

from importlib import metadata


class CompatError(RuntimeError):
    """An installed dependency lacks an internal that routing or delivery cannot do without."""


def version(dist: str) -> str:
    """``"<dist> <installed version>"`` for messages (``dist`` as pip names it)."""
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist} (version unknown)"
