"""``edge-train models list | promote VERSION | rollback``: the MLflow model registry.

Every tracked training run registers its model set as a new version of the registered
model of its sensor set (:mod:`training.tracking`). Promoting a version points an alias
(``champion`` by default) at it and writes the set into a folder ready for the agent's
``models.dir`` (then ``systemctl reload edge-agent`` / SIGHUP picks it up); rolling back
points the alias at the version it held before and writes that one.

Why an alias history tag: MLflow keeps only the alias' current target, but a rollback needs
the previous one. The registered model's tag ``<alias>.history`` is the JSON list of the
versions promoted so far, oldest first.

Writing the folder: the set is downloaded beside the target, verified with the agent's own
:func:`edge_agent.pipeline.manifest.load_manifest` (checksums, and the manifest must name this very
run and version), then moved in file by file with ``manifest.json`` last, the same order the
training pipeline publishes in, so an agent never reads a manifest whose files are not there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.pipeline.manifest import MANIFEST_NAME, Manifest, load_manifest

from .tracking import ARTIFACT_PATH, TrackingError, client, default_uri

DEFAULT_ALIAS = "champion"


class RegistryError(TrackingError):
    """A registry action that cannot be done; the message says why."""


def history_tag(alias: str) -> str:
    return f"{alias}.history"


# --- the command line ----------------------------------------------------------------------


def add_models_parser(
    sub: Any, add_config: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """The ``models`` command and its actions, on the ``edge-train`` sub-parsers."""
    common = argparse.ArgumentParser(add_help=False)
    add_config(common)
    common.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: the config's tracking.uri, else "
        "sqlite:///<output_dir>/../mlruns.db as edge-train train uses)",
    )
    common.add_argument(
        "--name",
        help="registered model (default: tracking.registered_model, else the only one)",
    )
    p = sub.add_parser(
        "models",
        help="list, promote and roll back registered model sets (MLflow registry)",
        description="The registered versions of a model (one registered model per sensor "
        "set; every tracked `edge-train train` adds a version).",
    )
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = actions.add_parser(
        "list", parents=[common], help="registered versions, newest first, with aliases"
    )
    ls.set_defaults(models_func=cmd_list)
    for name, helptext in (
        ("promote", "point the alias at VERSION and write that model set to --to"),
        ("rollback", "point the alias back at its previous version and write that set to --to"),
    ):
        a = actions.add_parser(name, parents=[common], help=helptext, description=helptext)
        if name == "promote":
            a.add_argument("version", type=int, metavar="VERSION", help="registered version")
        a.add_argument(
            "--to", type=Path, required=True, help="model set folder (the agent's models.dir)"
        )
        a.add_argument("--alias", default=DEFAULT_ALIAS, help=f"default: {DEFAULT_ALIAS}")
        a.set_defaults(models_func=cmd_promote if name == "promote" else cmd_rollback)
    return p


def _client_and_name(args: argparse.Namespace) -> tuple[Any, str, str]:
    from .config import load_config

    cfg = load_config(args.config)
    uri = args.tracking_uri or cfg.tracking.uri or default_uri(cfg.output_dir)
    c = client(uri)
    name = args.name or cfg.tracking.registered_model
    if name:
        return c, name, uri
    names = sorted(m.name for m in c.search_registered_models())
    if len(names) == 1:
        return c, names[0], uri
    if not names:
        raise RegistryError(f"{uri}: no registered models yet (run edge-train train first)")
    raise RegistryError(f"{uri}: several registered models {names}: choose one with --name")


def cmd_list(args: argparse.Namespace) -> int:
    c, name, uri = _client_and_name(args)
    rows = list_versions(c, name)
    if not rows:
        print(f"{name} ({uri}): no versions")
        return 0
    from .report import format_table

    header = ["version", "aliases", "created (UTC)", "model set", "run id", "test F1 ensemble"]
    print(f"{name} ({uri})")
    print(format_table(header, [[str(r[h]) for h in header] for r in rows]))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    c, name, _ = _client_and_name(args)
    print(promote(c, name, args.version, args.to, args.alias))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    c, name, _ = _client_and_name(args)
    print(rollback(c, name, args.to, args.alias))
    return 0


# --- the actions ---------------------------------------------------------------------------


def _aliases(c: Any, name: str) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for alias, version in c.get_registered_model(name).aliases.items():
        by_version.setdefault(int(version), []).append(alias)
    return by_version


def list_versions(c: Any, name: str) -> list[dict[str, Any]]:
    """One dict per version, newest first (keys are the ``models list`` columns)."""
    _require_model(c, name)
    aliases = _aliases(c, name)
    rows = []
    for mv in sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: -int(v.version)):
        f1 = None
        if mv.run_id:
            f1 = c.get_run(mv.run_id).data.metrics.get("test.ensemble.f1")
        rows.append(
            {
                "version": int(mv.version),
                "aliases": ",".join(sorted(aliases.get(int(mv.version), []))) or "-",
                "created (UTC)": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
                .replace(microsecond=0)
                .isoformat()
                .replace("+00:00", "Z"),
                "model set": mv.tags.get("model_set_version", "?"),
                "run id": mv.run_id or "-",
                "test F1 ensemble": "n/a" if f1 is None else f"{f1:.3f}",
            }
        )
    return rows


def _require_model(c: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in c.search_registered_models())
        raise RegistryError(f"no registered model {name!r} (known: {known})") from None


def _version(c: Any, name: str, version: int) -> Any:
    from mlflow.exceptions import MlflowException

    _require_model(c, name)
    try:
        return c.get_model_version(name, str(version))
    except MlflowException:
        known = sorted(int(v.version) for v in c.search_model_versions(f"name='{name}'"))
        raise RegistryError(f"{name} has no version {version} (versions: {known})") from None


def _current(c: Any, name: str, alias: str) -> int | None:
    return {a: int(v) for a, v in c.get_registered_model(name).aliases.items()}.get(alias)


def _history(c: Any, name: str, alias: str) -> list[int]:
    raw = c.get_registered_model(name).tags.get(history_tag(alias))
    return [int(v) for v in json.loads(raw)] if raw else []


def install(c: Any, name: str, version: int, target: Path) -> Manifest:
    """Download version ``version`` of ``name``, verify it and move it into ``target``."""
    import mlflow.artifacts

    mv = _version(c, name, version)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.download"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=mv.source, dst_path=str(staging), tracking_uri=c.tracking_uri
        )
        got = staging / ARTIFACT_PATH
        if not (got / MANIFEST_NAME).is_file():  # a source not ending in model_set/
            got = staging
        manifest = load_manifest(got)  # checksums: a damaged download is refused here
        tracking = manifest.tracking
        if tracking is None or (tracking.run_id, tracking.registered_version) != (
            mv.run_id,
            version,
        ):
            raise RegistryError(
                f"{name} version {version}: its manifest names "
                f"{None if tracking is None else (tracking.run_id, tracking.registered_version)}"
                f", not run {mv.run_id} version {version}; refusing to install it"
            )
        target.mkdir(parents=True, exist_ok=True)
        for model in manifest.models.values():
            os.replace(got / model.file, target / model.file)
        if (got / "report").is_dir():
            shutil.rmtree(target / "report", ignore_errors=True)
            os.replace(got / "report", target / "report")
        os.replace(got / MANIFEST_NAME, target / MANIFEST_NAME)  # last: the set is complete
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_manifest(target)


def promote(c: Any, name: str, version: int, target: Path, alias: str = DEFAULT_ALIAS) -> str:
    before = _current(c, name, alias)
    manifest = install(c, name, version, target)
    c.set_registered_model_alias(name, alias, str(version))
    history = _history(c, name, alias)
    if not history or history[-1] != version:
        history.append(version)
    c.set_registered_model_tag(name, history_tag(alias), json.dumps(history))
    return (
        f"promoted {name} version {version} (model set {manifest.model_set_version}) to "
        f"{target}/; alias {alias}: {before if before is not None else '-'} -> {version}"
    )


def rollback(c: Any, name: str, target: Path, alias: str = DEFAULT_ALIAS) -> str:
    """Back to the version ``alias`` pointed at before the current one."""
    _require_model(c, name)
    current = _current(c, name, alias)
    if current is None:
        raise RegistryError(f"{name} has no alias {alias!r}: promote a version first")
    history = _history(c, name, alias)
    while history and history[-1] == current:
        history.pop()
    if history:
        previous = history[-1]
    else:  # the alias was set outside edge-train: the newest version below the current one
        older = [int(v.version) for v in c.search_model_versions(f"name='{name}'")]
        older = [v for v in older if v < current]
        if not older:
            raise RegistryError(f"{name}: {alias} is version {current}; nothing to roll back to")
        previous = max(older)
        history = [previous]
    manifest = install(c, name, previous, target)
    c.set_registered_model_alias(name, alias, str(previous))
    c.set_registered_model_tag(name, history_tag(alias), json.dumps(history))
    return (
        f"rolled back {name} to version {previous} (model set {manifest.model_set_version}) "
        f"in {target}/; alias {alias}: {current} -> {previous}"
    )
