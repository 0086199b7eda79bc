"""Worker processes: python-socketio ``AsyncServer`` on aiohttp and uvloop, no Redis."""
