"""The legacy socket.io RedisStore and the set-based socket/room store written by the master."""
