"""sio-cluster: a multi-process Socket.IO cluster for Python, routed by one master per host.

Everything the project installs lives under this one import package, so a user's own
``workers``, ``master`` or ``wire`` module never meets ours. The repository keeps its
layers as top-level folders (``common/``, ``wire/``, ``legacy_store/``, ``master/``,
``workers/``); the links in this folder make them ``sio_cluster.common`` and so on, for
the interpreter, the wheel, mypy and editors alike.
"""

from __future__ import annotations

# The one place the version is written: setup.cfg reads it (version = attr:), so the
# wheel's metadata, ``sio_cluster.__version__`` and ``sio-master --version`` agree.
__version__ = "0.1.0"
