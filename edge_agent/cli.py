"""`edge-agent` command line: run, check, replay, simulate, demo, schema.

Every failure the user can fix (bad config, bad model set, bad input file) ends with
one line per problem on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent import __version__
from edge_agent.config import AgentSettings, ConfigError, load_settings
from edge_agent.pipeline.manifest import ManifestError
from edge_agent.tools.recorded_csv import add_layout_options

EXIT_USAGE = 2


def _fail(lines: Sequence[str]) -> int:
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_USAGE


def _settings(path: Path | None) -> AgentSettings:
    return load_settings(path)


# ---------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.daemon.heap import freeze_startup_heap
    from edge_agent.daemon.server import Server, ServerHooks, TaskCrashed
    from edge_agent.logging_setup import configure_logging

    settings = _settings(args.config)
    try:
        password = settings.mqtt.resolved_password()
    except OSError as exc:  # the same line as `check` gives
        problem = (
            f"file {Path(exc.filename).absolute()} not found"
            if isinstance(exc, FileNotFoundError)
            else f"cannot read {exc.filename}: {exc.strerror}"
        )
        raise ConfigError([f"config key mqtt.password_file: {problem}"]) from None
    configure_logging(
        args.log_level or settings.logging.level,
        settings.logging.format,
        secret_values=[password] if password else (),
    )

    async def main() -> None:
        hooks = ServerHooks(on_ready=freeze_startup_heap)
        server = Server(settings, config_path=args.config, hooks=hooks)
        server.install_signal_handlers()
        await server.serve()

    try:
        asyncio.run(main())
    except TaskCrashed as exc:  # exit non-zero so systemd (Restart=on-failure) restarts us
        return _fail([str(exc)])
    return 0


# ---------------------------------------------------------------------------- check
def check_problems(settings: AgentSettings) -> tuple[list[str], str]:
    """Everything `check` verifies beyond the config schema; returns (problems, summary)."""
    from edge_agent.model_loading import load_model_set
    from edge_agent.pipeline.alarm_rules import suppression_problems

    try:
        model_set = load_model_set(settings, None)
    except ManifestError as exc:
        return exc.problems, ""
    problems: list[str] = []
    names = model_set.manifest.sensor_names
    for i, unit in enumerate(settings.units):
        for sensor in unit.limits:
            if sensor not in names:
                problems.append(
                    f"config key units.{i}.limits.{sensor}: no such sensor in the model set "
                    f"(sensors: {', '.join(names)})"
                )
    problems += suppression_problems(settings, names)
    tls = settings.mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path is not None and not Path(path).is_file():
            problems.append(f"config key mqtt.tls.{key}: file {Path(path).absolute()} not found")
    pw = settings.mqtt.password_file
    if pw is not None and not Path(pw).is_file():
        problems.append(f"config key mqtt.password_file: file {Path(pw).absolute()} not found")
    summary = (
        f"model set {model_set.version}: {len(names)} sensors, window {model_set.window}, "
        f"models {', '.join(model_set.manifest.models)}; {len(settings.units)} unit(s)"
    )
    tracking = model_set.manifest.tracking
    if tracking is not None:
        summary += f"; trained in run {tracking.run_id}"
        if tracking.registered_version is not None:
            summary += f" ({tracking.registered_model} version {tracking.registered_version})"
    return problems, summary


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    problems, summary = check_problems(settings)
    if problems:
        return _fail(problems)
    print(f"ok: {args.config}: {summary}")
    return 0


# ---------------------------------------------------------------------------- replay
def cmd_replay(args: argparse.Namespace) -> int:
    from edge_agent.logging_setup import configure_logging
    from edge_agent.model_loading import load_model_set
    from edge_agent.tools.replay import replay

    settings = _settings(args.config)
    configure_logging("WARNING", "console")
    model_set = load_model_set(settings, None)
    summary = replay(
        settings,
        model_set,
        args.input,
        args.output,
        timestamp_column=args.timestamp_column,
        separator=args.separator,
        decimal=args.decimal,
        time_format=args.time_format,
        unit=args.unit,
    )
    print(summary.describe() if hasattr(summary, "describe") else summary)
    return 0


# ---------------------------------------------------------------------------- simulate
def cmd_simulate(args: argparse.Namespace) -> int:
    from edge_agent.tools.plants import REFERENCE_DESIGN, find_plant, unit_design
    from edge_agent.tools.publisher import (
        BrokerUnavailable,
        SimulationPlan,
        parse_broker_url,
        parse_fault,
        simulate_to_broker,
    )
    from edge_agent.tools.simulator import FaultEvent

    host, port = parse_broker_url(args.broker)
    faults: dict[str | None, list[FaultEvent]] = {}
    for spec in args.fault or []:
        unit, event = parse_fault(spec)
        faults.setdefault(unit, []).append(event)
    units = [f"unit{i + 1}" for i in range(args.units)]
    design = REFERENCE_DESIGN
    if args.gppd is not None:
        try:
            real = find_plant(args.gppd)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        design = unit_design(real)
        args.plant = args.plant or real.slug
        print(
            f"simulating {real.name} ({real.gppd_id}, {real.fuel}, {real.capacity_mw:g} MW): "
            f"{len(units)} of its {real.units} x {real.unit_mw:.0f} MW units",
            flush=True,
        )
    args.plant = args.plant or "plant1"
    plan = SimulationPlan(
        plant=args.plant,
        design=design,
        units=units,
        mode=args.mode,
        backfill=args.backfill,
        faults=faults,
        seed=args.seed,
        qos=args.qos,
    )

    def show(step: int, labels: list[int]) -> None:
        if step == -1:
            print(f"sent {plan.backfill} steps of history (backfill)", flush=True)
        elif step >= 0 and step % 10 == 0:
            print(f"step {step}: units in fault {sum(labels)}/{len(labels)}", flush=True)

    client_id = f"edge-sim-{args.plant}"
    try:
        sent = asyncio.run(
            simulate_to_broker(
                host, port, plan, client_id=client_id, duration=args.duration, on_step=show
            )
        )
    except KeyboardInterrupt:
        return 0
    except BrokerUnavailable as exc:  # broker unreachable or gone: the user can fix that
        return _fail([f"cannot publish to {args.broker}: {exc}"])
    print(f"published {sent} messages")
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.tools.demo import run_demo

    return run_demo(args)


def cmd_schema(args: argparse.Namespace) -> int:
    from edge_agent.schema_files import SCHEMA_DIR, stale_schemas, write_schemas

    directory: Path = args.out or SCHEMA_DIR
    if args.check:
        stale = stale_schemas(directory)
        if stale:
            return _fail([f"{directory / n} is stale: run `edge-agent schema`" for n in stale])
        return 0
    for path in write_schemas(directory):
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Anomaly detection for thermal power plants, at the edge.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the agent daemon",
        description="Run the agent daemon "
        "(SIGTERM/SIGINT stop it, SIGHUP reloads config and model set).",
    )
    run.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    run.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="override logging.level of the config",
    )
    run.set_defaults(fn=cmd_run)

    check = sub.add_parser(
        "check",
        help="validate config and model set",
        description="Validate the configuration and the model set (checksums, "
        "sensor lists, ONNX input shapes); one line per problem, exit 2 if any.",
    )
    check.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    check.set_defaults(fn=cmd_check)

    rp = sub.add_parser(
        "replay",
        help="back-test a CSV through the live decision code",
        description="Feed a CSV through the same align → buffer → features → "
        "score → vote → alarm code as the daemon, with a simulated clock; write "
        "one JSON line per input step.",
    )
    rp.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    rp.add_argument(
        "--input",
        type=Path,
        required=True,
        help="CSV with a timestamp column and one column per model sensor",
    )
    rp.add_argument("--output", type=Path, required=True, help="JSON-lines output file")
    rp.add_argument("--unit", help="unit name to replay as (default: the first configured unit)")
    rp.add_argument(
        "--timestamp-column",
        default="auto",
        help="column with ISO 8601 times or Unix seconds (default auto: 'timestamp', else "
        "the one column of date-times, as edge-train guesses it)",
    )
    add_layout_options(rp, default="auto")  # as edge-train reads its data
    rp.set_defaults(fn=cmd_replay)

    sim = sub.add_parser(
        "simulate",
        help="publish simulated plant data to a broker",
        description="Publish simulated thermal-unit readings in real time.",
    )
    sim.add_argument(
        "--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port (default: %(default)s)"
    )
    sim.add_argument(
        "--gppd",
        metavar="PLANT",
        help="simulate units of a real plant (GPPD name or id, e.g. 'VINDH_CHAL STPS'); "
        "default: the 600 MW reference coal unit the shipped models were trained on",
    )
    sim.add_argument(
        "--plant", help="plant id in the topics (default: the --gppd plant's name, or plant1)"
    )
    sim.add_argument("--units", type=int, default=1, help="number of units (unit1..unitN)")
    sim.add_argument(
        "--mode",
        choices=["telemetry", "sensors"],
        default="telemetry",
        help="one telemetry message per step, or one message per sensor",
    )
    sim.add_argument(
        "--backfill",
        type=int,
        default=60,
        help="steps of history sent at once before the live data (default: 60); fault "
        "starts do not count them",
    )
    sim.add_argument(
        "--fault",
        action="append",
        metavar="[UNIT/]KIND@START+LEN[:SENSOR][*MAG]",
        help="inject a fault, e.g. unit1/bearing_degradation@20+120 or "
        "spike@30+5:steam_pressure*2 (repeatable); START counts live steps after the backfill",
    )
    sim.add_argument("--duration", type=float, help="seconds of live data (default: forever)")
    sim.add_argument("--seed", type=int, default=0, help="simulator random seed (default: 0)")
    sim.add_argument(
        "--qos", type=int, choices=[0, 1], default=1, help="MQTT QoS of the readings (default: 1)"
    )
    sim.set_defaults(fn=cmd_simulate)

    demo = sub.add_parser(
        "demo",
        help="everything in one process: broker, plant, agent",
        description="Start an embedded broker (unless --broker), the plant "
        "simulator with a fault schedule and the agent with the shipped models; "
        "print alerts as they are published and a status line every few seconds.",
    )
    demo.add_argument(
        "--broker", help="use this broker instead of the embedded one (mqtt://host:port)"
    )
    demo.add_argument(
        "--port",
        type=int,
        help="port of the embedded broker on 127.0.0.1 (default: 1883, or any free port if "
        "1883 is taken)",
    )
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument(
        "--units", type=int, default=3, help="simulated units unit1..unitN (default: 3)"
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="simulator random seed: same seed, same run"
    )
    demo.add_argument(
        "--models",
        type=Path,
        default=None,
        help="model set directory (default: ./models if it holds one, else the checkout's models/)",
    )
    demo.add_argument(
        "--metrics-port",
        type=int,
        default=9108,
        help="Prometheus metrics port on 127.0.0.1 (default: 9108; 0 = any free port)",
    )
    demo.add_argument(
        "--status-every",
        type=float,
        default=5.0,
        help="seconds between status lines (default: 5)",
    )
    demo.add_argument(
        "--console-port", type=int, default=8080, help="web port of the console (if installed)"
    )
    demo.add_argument(
        "--no-console", dest="console", action="store_false", help="do not start the console"
    )
    demo.set_defaults(fn=cmd_demo)

    sc = sub.add_parser(
        "schema",
        help="write the JSON Schemas of the messages and the manifest",
        description="Write edge_agent/schemas/*.json from the definitions the agent uses "
        "(alerts, scores, alarm commands and replies, alarm list, manifest).",
    )
    sc.add_argument("--out", type=Path, help="directory (default: the package's schemas/)")
    sc.add_argument("--check", action="store_true", help="write nothing; exit 2 if a file is stale")
    sc.set_defaults(fn=cmd_schema)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        return _fail(exc.problems)
    except ManifestError as exc:
        return _fail(exc.problems)
    except (ValueError, OSError) as exc:
        return _fail([str(exc)])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
