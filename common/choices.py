"""The values some options may take, apart from the configuration that validates them.

Why apart: pure protocol code (the sharded adapter's channel rules) names a subscription
mode, and must not import the configuration module, which parses Redis URLs with redis-py.
"""

from __future__ import annotations

from typing import Literal

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]
AdapterForm = Literal["classic", "sharded"]
SubscriptionMode = Literal["static", "dynamic", "dynamic-private"]
WsLayer = Literal["own", "aiohttp"]
