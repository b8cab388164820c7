"""The start-up heap is frozen once the agent is ready (``edge_agent.daemon.heap``).

A full garbage collection walks every tracked object; frozen ones are skipped. These tests
check that the freeze happens after a collection (garbage is not frozen for good), that it
takes what exists then out of the collector's generations, and that the real ``edge-agent
run`` process does it once, after ``ready``.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from handmade_models import build_model_set

from edge_agent.daemon.heap import freeze_startup_heap
from harness.agent import AgentProcess, agent_config
from harness.broker import MosquittoBroker


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process as it was: frozen objects go back to the collector."""
    try:
        yield
    finally:
        gc.unfreeze()


def test_garbage_is_collected_before_the_freeze(unfrozen: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    gone = weakref.ref(a)
    del a, b
    freeze_startup_heap()
    assert gone() is None, "a cycle that was garbage at start-up was frozen for good"


def test_live_objects_leave_the_collected_generations(unfrozen: None) -> None:
    kept = Node()
    kept.other = Node()
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() > 0
    tracked = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
    assert id(kept) not in tracked and id(kept.other) not in tracked
    later = Node()  # what the agent allocates afterwards is collected as usual
    assert any(o is later for o in gc.get_objects(generation=0))


@pytest.mark.slow
def test_the_agent_process_freezes_its_heap_once_when_ready(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    models = build_model_set(tmp_path / "models", window=30)
    config = agent_config(tmp_path / "agent", mosquitto.port, models)
    agent = AgentProcess(tmp_path / "agent", config)
    try:
        agent.start()
        agent.wait_for_event("heap_frozen")
        events = [e for e in agent.log_events() if e.get("event") in ("ready", "heap_frozen")]
        assert [e["event"] for e in events] == ["ready", "heap_frozen"]
        assert events[1]["objects"] > 10_000  # modules, models, settings: the long-lived heap
        rc, _seconds = agent.terminate()
        assert rc == 0
    finally:
        agent.kill()
