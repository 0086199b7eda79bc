"""The user's application, in whichever form python-socketio users already have it.

``--app module:attr`` names one of four forms (:mod:`.forms` tells them apart):

- a ``socketio.ASGIApp`` (with or without ``other_asgi_app``): its server serves Socket.IO,
  every other path goes to the ASGI app through :mod:`.asgi_bridge`, whose lifespan runs once
  per worker;
- a ``socketio.AsyncServer``;
- an aiohttp ``web.Application`` a ``socketio.AsyncServer`` is attached to;
- a ``setup(sio[, web_app])`` callable, called with the server the worker builds.

In the first three the user's own server object serves, with its options
(:mod:`.adopt`): it is made a member of the cluster rather than copied.
"""
