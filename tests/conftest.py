"""Shared fixtures. Broker fixtures start real Mosquitto processes (see harness/broker.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.broker import MosquittoBroker
from harness.pki import Pki, make_pki


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A plain Mosquitto (anonymous, persistence on) on a free port, killed after the test."""
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """``make(start=True, **options)``: a MosquittoBroker with those options; all killed after."""
    brokers: list[MosquittoBroker] = []

    def make(*, start: bool = True, **options: Any) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(brokers)}", **options)
        brokers.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture(scope="session")
def mqtt_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throw-away CA with server and client certificates (made once per test session)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
