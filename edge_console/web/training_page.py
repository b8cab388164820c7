"""Training (placeholder until the training page lands)."""

from __future__ import annotations

from fastapi import FastAPI

from ..runtime import Console


def register(console: Console, app: FastAPI) -> None:
    return None
