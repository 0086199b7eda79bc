"""The legacy socket.io RedisStore and the set-based socket/room store (see issue 4)."""
