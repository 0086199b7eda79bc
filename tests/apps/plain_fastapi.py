"""A FastAPI app without Socket.IO: ``--app`` refuses it in one line."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()
