"""The one reload path, ``Engine.reconfigure``: every reloadable key is applied, every other
changed key is refused with a reason (never silently ignored). One test per key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from handmade_models import build_model_set, normal_series
from test_engine import NAMES, T0, WINDOW, Plant, engine, make_settings

from edge_agent.config import AgentSettings
from edge_agent.model_loading import load_model_set
from edge_agent.pipeline.manifest import ManifestError
from edge_agent.pipeline.reconfigure import RELOADABLE_KEYS, RESTART_REASON, changed_keys
from edge_agent.pipeline.scoring import ModelSet


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_set(tmp_path_factory.mktemp("models"), window=WINDOW)


def with_models(settings: AgentSettings, **models: Any) -> AgentSettings:
    return settings.model_copy(update={"models": settings.models.model_copy(update=models)})


def test_stride_change_is_applied_on_reload(model_dir: Path) -> None:
    """The bug: a changed models.stride on SIGHUP was silently ignored."""
    base = make_settings(models={"dir": str(model_dir)})
    ms = load_model_set(base, None)
    e, _ = engine(ms, models={"dir": str(model_dir)})
    plant = Plant(e)
    series = normal_series(WINDOW + 40, seed=3)
    plant.stream(series[: WINDOW + 10])
    assert all(s.scored for s in plant.steps[WINDOW:])  # stride 1: every full window
    report = e.reconfigure(with_models(e.settings, stride=4), ms)
    assert report.applied == ["models.stride"] and report.refused == {}
    assert e.settings.models.stride == 4
    n = len(plant.steps)
    plant.stream(series[WINDOW + 10 :], t0=T0 + WINDOW + 10)
    after = plant.steps[n:]
    scored = [s for s in after if s.scored]
    assert len(after) == 30 and 6 <= len(scored) <= 8  # one in four
    assert {s.not_scored for s in after if not s.scored} == {"stride"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("threads", 2),
        ("batch_threads", 2),
        ("enable_cpu_mem_arena", False),
        ("expected_sensors", NAMES),
    ],
)
def test_model_loading_keys_are_applied(model_dir: Path, key: str, value: Any) -> None:
    """models.threads/batch_threads/enable_cpu_mem_arena/expected_sensors decide how the new
    set loads."""
    base = make_settings(models={"dir": str(model_dir)})
    e, _ = engine(load_model_set(base, None), models={"dir": str(model_dir)})
    new = with_models(e.settings, **{key: value})
    report = e.reconfigure(new, load_model_set(new, NAMES))
    assert report.applied == [f"models.{key}"] and report.refused == {}
    assert getattr(e.settings.models, key) == value


def test_models_dir_is_applied_with_the_new_set(model_dir: Path, tmp_path: Path) -> None:
    base = make_settings(models={"dir": str(model_dir)})
    e, _ = engine(load_model_set(base, None), models={"dir": str(model_dir)})
    other = build_model_set(tmp_path / "v2", window=WINDOW, lstm_threshold=1.7)
    new = with_models(e.settings, dir=other)
    report = e.reconfigure(new, load_model_set(new, NAMES))
    assert report.applied == ["models.dir"]
    assert e.model_set.manifest.models["lstm_ae"].threshold == 1.7


def test_expected_sensors_that_do_not_match_are_refused(model_dir: Path) -> None:
    base = make_settings(models={"dir": str(model_dir)})
    e, _ = engine(load_model_set(base, None), models={"dir": str(model_dir)})
    with pytest.raises(ManifestError):
        load_model_set(with_models(e.settings, expected_sensors=NAMES[:3]), NAMES)


@pytest.mark.parametrize(
    ("section", "update", "key"),
    [
        ("align", {"lateness_seconds": 9.0}, "align.lateness_seconds"),
        ("alarm", {"on_delay": 7}, "alarm.on_delay"),
        ("mqtt", {"host": "elsewhere"}, "mqtt.host"),
        ("topics", {"scores": "x/{unit}/scores"}, "topics.scores"),
        ("outbox", {"max_rows": 17}, "outbox.max_rows"),
        ("metrics", {"port": 1}, "metrics.port"),
    ],
)
def test_keys_outside_models_are_refused_with_a_reason(
    model_set_dir: Path, section: str, update: dict[str, Any], key: str
) -> None:
    base = make_settings(models={"dir": str(model_set_dir)})
    ms = load_model_set(base, None)
    e, _ = engine(ms, models={"dir": str(model_set_dir)})
    old = getattr(e.settings, section)
    new = e.settings.model_copy(update={section: old.model_copy(update=update)})
    report = e.reconfigure(new, ms)
    assert report.applied == [] and report.refused == {key: RESTART_REASON}
    assert getattr(e.settings, section) == old  # not applied


def test_top_level_keys_are_refused(model_set_dir: Path) -> None:
    base = make_settings(models={"dir": str(model_set_dir)})
    ms = load_model_set(base, None)
    e, _ = engine(ms, models={"dir": str(model_set_dir)})
    new = e.settings.model_copy(update={"plant": "other", "agent_id": "x"})
    report = e.reconfigure(new, ms)
    assert report.refused == {"agent_id": RESTART_REASON, "plant": RESTART_REASON}


def test_every_models_key_is_reloadable() -> None:
    """A new key under ``models`` must be decided on: added to RELOADABLE_KEYS or refused."""
    fields = {
        f"models.{name}" for name in AgentSettings.model_fields["models"].annotation.model_fields
    }  # type: ignore[union-attr]
    assert fields == RELOADABLE_KEYS


def test_changed_keys_names_leaves() -> None:
    a = make_settings()
    b = make_settings(alarm={"on_delay": 4, "off_delay": 5}, models={"stride": 3})
    assert changed_keys(a, b) == ["alarm.on_delay", "models.stride"]
    assert changed_keys(a, a) == []


@pytest.fixture(scope="module")
def model_set_dir(model_dir: Path) -> Path:
    return model_dir


def test_an_incompatible_set_changes_nothing(model_dir: Path, tmp_path: Path) -> None:
    base = make_settings(models={"dir": str(model_dir)})
    ms = load_model_set(base, None)
    e, _ = engine(ms, models={"dir": str(model_dir)})
    bad = ModelSet.load(build_model_set(tmp_path / "w", window=WINDOW + 1))
    with pytest.raises(ManifestError, match="window"):
        e.reconfigure(with_models(e.settings, stride=5), bad)
    assert e.settings.models.stride == 1 and e.model_set is ms
