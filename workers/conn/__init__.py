"""The workers' own connection layer for Engine.IO sessions (docs/connection-layer.md)."""
