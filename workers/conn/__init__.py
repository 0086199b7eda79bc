"""The workers' own connection layer for Engine.IO 4 websockets (docs/connection-layer.md)."""
