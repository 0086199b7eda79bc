"""The contract between the master and its workers: the pipe frame format and its transport.

A worker is started as ``python -m sio_cluster.workers FD WORKER_ID`` with one end of a Unix
socketpair as ``FD`` and the master's configuration, as JSON, in the environment
variable named by :data:`WORKER_CONFIG_ENV`.
"""

WORKER_CONFIG_ENV = "SIO_WORKER_CONFIG"
