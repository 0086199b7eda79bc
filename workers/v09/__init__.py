"""socket.io 0.9 clients (Socket.IO protocol 1) on a worker (``--allow-v09``)."""
