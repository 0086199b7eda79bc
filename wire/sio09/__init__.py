"""Socket.IO protocol 1, as socket.io 0.9 servers and socket.io-client 0.9 speak it."""
