"""MLflow tracking of ``edge-train train`` runs, and registration of the model set.

Why: a model set on an edge box must be traceable to the data and settings that produced
it, comparable with the last one, and replaceable by an earlier one (see
:mod:`training.registry`). One call, :func:`record_run`, after the model set is published:

* params: every training config key (flattened, ``lstm_ae.epochs``), the data file's sha256
  and row count;
* metrics: every number found in the run's metrics dict (flattened, lists become steps, so
  the per-epoch LSTM losses are curves), in ``report/diagnostics.json`` (cross-validation,
  importance) and the timings;
* artifacts: the ONNX files, ``manifest.json`` and ``report/`` under ``model_set/``;
* tags: project version, git commit (when the checkout is a git work tree), model set id;
* a new version of the registered model of this sensor set, whose source is that
  ``model_set/`` folder; the run id and the version are written into the manifest first,
  so the manifest in the registry and in the output directory both carry them.

The store defaults to SQLite beside the output directory (``<out>/../mlruns.db``, artifacts
in ``<out>/../mlartifacts/``); any MLflow tracking URI can be configured instead. mlflow is
imported only here and in the registry (the ``train`` extra); the agent never imports it.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

import edge_agent
from edge_agent.pipeline.manifest import MANIFEST_NAME, TrackingEntry, load_manifest

from .diagnostics import JSON_NAME as DIAGNOSTICS_JSON
from .report import REPORT_DIR

if TYPE_CHECKING:
    from .config import TrainConfig
    from .result import TrainResult

DB_NAME = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
ARTIFACT_PATH = "model_set"
#: MLflow's limit on one param value (MLflow 3: 6000 characters).
MAX_PARAM_CHARS = 6000
_BATCH = 900  # log_batch accepts up to 1000 metrics per call


class TrackingError(RuntimeError):
    """The run could not be recorded or registered; the message says where and why."""


class TrackingSection(BaseModel):
    """``tracking:`` of the training config (see config/training.yaml)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: MLflow tracking URI; None = ``sqlite:///<output_dir>/../mlruns.db``.
    uri: str | None = None
    experiment: str = Field(default="edge-agent", min_length=1)
    #: Registered model (one per sensor set); None = ``edge-agent-<hash of the sensor list>``.
    registered_model: str | None = Field(default=None, min_length=1)
    registry: bool = True


def default_uri(output_dir: Path) -> str:
    """``sqlite:///`` + absolute path of ``mlruns.db`` in the output directory's parent."""
    return f"sqlite:///{(Path(output_dir).resolve().parent / DB_NAME).as_posix()}"


def resolve_uri(section: TrackingSection, output_dir: Path) -> str:
    return section.uri or default_uri(output_dir)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other kind of store."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside its file; other stores choose their own."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent / ARTIFACTS_DIR).as_uri()


def registered_model_name(section: TrackingSection, sensors: list[str]) -> str:
    if section.registered_model:
        return section.registered_model
    digest = hashlib.sha256(",".join(sensors).encode()).hexdigest()[:8]
    return f"edge-agent-{digest}"


def client(uri: str) -> Any:
    """An MlflowClient on ``uri`` for tracking and registry (creates a SQLite file's folder)."""
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise TrackingError(
            f"tracking needs mlflow-skinny (the train extra: pip install -e '.[train]'): {exc}"
        ) from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# --- flattening ----------------------------------------------------------------------------


def _key(parts: tuple[str, ...]) -> str:
    """MLflow keys allow letters, digits, ``_ - . / :`` and spaces; anything else becomes _."""
    text = ".".join(parts)
    return "".join(c if c.isalnum() or c in "_-./: " else "_" for c in text)


def flat_params(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}``; lists are kept whole as JSON."""
    out: dict[str, str] = {}
    for k, v in tree.items():
        here = (*prefix, str(k))
        if isinstance(v, Mapping):
            out.update(flat_params(v, here))
        else:
            text = v if isinstance(v, str) else json.dumps(v, default=str)
            out[_key(here)] = text[:MAX_PARAM_CHARS]
    return out


def flat_metrics(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, float, int]]:
    """Every finite number in a nested dict as (key, value, step); a list of numbers gives
    one step per element. Booleans and strings are not metrics and are skipped."""
    for k, v in tree.items():
        here = (*prefix, str(k))
        if isinstance(v, Mapping):
            yield from flat_metrics(v, here)
        elif isinstance(v, list | tuple):
            for step, item in enumerate(v):
                if _is_number(item):
                    yield _key(here), float(item), step
        elif _is_number(v):
            yield _key(here), float(v), 0


def _is_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return math.isfinite(float(v))


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRun:
    uri: str
    run_id: str
    experiment_id: str
    artifact_uri: str
    registered_model: str | None
    version: int | None


def git_commit(where: Path) -> str | None:
    """HEAD of the git work tree holding ``where``, None outside one (or without git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def _experiment_id(c: Any, name: str, uri: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(c.create_experiment(name, artifact_location=artifact_root(uri)))


def _ensure_registered_model(c: Any, name: str, sensors: list[str]) -> None:
    """Create the registered model, or check an existing one is for the same sensor set."""
    from mlflow.exceptions import MlflowException

    wanted = ",".join(sensors)
    try:
        model = c.get_registered_model(name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
        c.create_registered_model(
            name,
            tags={"sensors": wanted},
            description=f"edge-agent model sets for sensors {wanted}",
        )
        return
    have = model.tags.get("sensors")
    if have is not None and have != wanted:
        raise TrackingError(
            f"registered model {name!r} holds model sets for sensors [{have}], this run has "
            f"[{wanted}]: name another one (tracking.registered_model)"
        )


def _metrics(result: TrainResult) -> list[Any]:
    from mlflow.entities import Metric

    now = int(1000 * time.time())
    out = [Metric(k, v, now, s) for k, v, s in flat_metrics(result.metrics)]
    out += [Metric(f"lstm_ae.{k}", v, now, s) for k, v, s in flat_metrics(result.history)]
    diagnostics = result.out_dir / REPORT_DIR / DIAGNOSTICS_JSON
    if diagnostics.is_file():
        tree = json.loads(diagnostics.read_text(encoding="utf-8"))
        out += [Metric(f"diagnostics.{k}", v, now, s) for k, v, s in flat_metrics(tree)]
    return out


def _write_tracking_into_manifest(out_dir: Path, entry: TrackingEntry) -> None:
    """Add ``tracking`` to the published manifest (atomic replace, as the pipeline writes)."""
    from .model_set import write_manifest

    manifest = load_manifest(out_dir)
    write_manifest(manifest.model_copy(update={"tracking": entry}), out_dir)


def _artifact_files(out_dir: Path) -> list[tuple[Path, str]]:
    """(file, artifact sub-path) of the model set: ONNX files, manifest, report/."""
    files = [(p, ARTIFACT_PATH) for p in sorted(out_dir.glob("*.onnx"))]
    files.append((out_dir / MANIFEST_NAME, ARTIFACT_PATH))
    report = out_dir / REPORT_DIR
    if report.is_dir():
        sub = f"{ARTIFACT_PATH}/{REPORT_DIR}"
        files += [(p, sub) for p in sorted(report.iterdir()) if p.is_file()]
    return files


def record_run(cfg: TrainConfig, result: TrainResult, progress: Any = print) -> RecordedRun | None:
    """Record the finished run (see module docstring); None when tracking is off."""
    section: TrackingSection = cfg.tracking
    if not section.enabled:
        return None
    from mlflow.entities import Param, RunStatus

    uri = resolve_uri(section, Path(cfg.output_dir))
    manifest = result.manifest
    try:
        c = client(uri)
        experiment_id = _experiment_id(c, section.experiment, uri)
        tags = {
            "mlflow.runName": manifest.model_set_version,
            "model_set_version": manifest.model_set_version,
            "edge_agent.version": edge_agent.__version__,
            "data.source": str(result.data.source),
            "mlflow.source.type": "LOCAL",
        }
        commit = git_commit(Path(__file__).resolve().parent)
        if commit:
            tags["mlflow.source.git.commit"] = commit
            tags["git_commit"] = commit
        run = c.create_run(experiment_id, tags=tags)
        run_id = run.info.run_id
    except TrackingError as exc:
        raise TrackingError(f"{exc} (the model set in {result.out_dir} is complete)") from exc
    except Exception as exc:  # the store is unreachable, locked, of another schema, ...
        raise TrackingError(
            f"tracking store {uri}: cannot start a run: {exc} (the model set in "
            f"{result.out_dir} is complete; --no-tracking skips tracking)"
        ) from exc
    try:
        params = flat_params(cfg.model_dump(mode="json"))
        params["data.sha256"] = result.data.sha256
        params["data.rows"] = str(result.data.rows_read)
        params["data.steps"] = str(result.data.n_steps)
        params["sensors"] = ",".join(manifest.sensor_names)
        param_list = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(param_list), 90):  # log_batch: at most 100 params a call
            c.log_batch(run_id, params=param_list[i : i + 90])
        metrics = _metrics(result)
        for i in range(0, len(metrics), _BATCH):
            c.log_batch(run_id, metrics=metrics[i : i + _BATCH])
        name = version = None
        if section.registry:
            name = registered_model_name(section, manifest.sensor_names)
            _ensure_registered_model(c, name, manifest.sensor_names)
            mv = c.create_model_version(
                name,
                source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}",
                run_id=run_id,
                tags={
                    "model_set_version": manifest.model_set_version,
                    "training_data_sha256": manifest.training_data_sha256,
                },
                description=f"model set {manifest.model_set_version}",
            )
            version = int(mv.version)
        entry = TrackingEntry(
            run_id=run_id,
            experiment=section.experiment,
            registered_model=name,
            registered_version=version,
        )
        _write_tracking_into_manifest(result.out_dir, entry)
        result.manifest = load_manifest(result.out_dir, manifest.sensor_names)
        for path, sub in _artifact_files(result.out_dir):
            c.log_artifact(run_id, str(path), sub)
        if version is not None:
            c.set_tag(run_id, "registered_model", f"{name}/{version}")
        c.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    except Exception as exc:
        c.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        if isinstance(exc, TrackingError):
            raise
        raise TrackingError(
            f"tracking store {uri}: run {run_id}: {exc} (the model set in {result.out_dir} "
            "is complete)"
        ) from exc
    where = f", registered as {name} version {version}" if version is not None else ""
    progress(f"tracked as run {run_id} in {uri}{where}")
    return RecordedRun(uri, run_id, experiment_id, run.info.artifact_uri, name, version)
