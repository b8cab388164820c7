"""`edge-agent demo`: a plant, a broker and the agent in one process.

The embedded broker is amqtt (MQTT 3.1.1 only, from the ``demo`` extra), so the demo runs
anywhere without installing Mosquitto; ``--broker`` points it at a real one instead.
Alerts are printed as a subscriber sees them on the alert topic — the same path SCADA uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import orjson

from edge_agent.config import AgentSettings, ConfigError, load_settings
from edge_agent.daemon.server import Server
from edge_agent.logging_setup import configure_logging
from edge_agent.metrics import Metrics
from edge_agent.tools.plants import Plant, find_plant, unit_design
from edge_agent.tools.ports import free_port
from edge_agent.tools.publisher import (
    SimulationPlan,
    parse_broker_url,
    parse_fault,
    publish_simulation,
)

#: Faults chosen so the first alert shows within ~30 s of start and each kind is seen.
DEMO_FAULTS = (
    "unit2/bearing_degradation@15+120",
    "unit1/spike@20+30:steam_pressure*3",
    "unit3/tube_leak@30+90*2",
    "unit1/noise_burst@150+60:turbine_vibration*2",
    "unit3/fouling@200+120*2",
)

#: A real plant whose 600 MW coal units have the design the shipped models were trained on.
DEMO_PLANT = "IND0000164"  # K_GUDEM NEW, Telangana: 1,800 MW coal

DEMO_LIMITS: dict[str, dict[str, float]] = {
    "steam_temperature": {"hi": 565.0, "hihi": 580.0},
    "turbine_vibration": {"hi": 7.1, "hihi": 11.0},
    "bearing_temperature": {"hi": 95.0, "hihi": 105.0},
}


def demo_plan(
    plant: str, units: list[str], seed: int = 0, real: Plant | None = None
) -> SimulationPlan:
    """The demo's simulated plant: units of ``DEMO_PLANT`` (a real plant's unit design),
    ``DEMO_FAULTS`` on the units that exist, 60 steps of backfill so the windows fill at
    once."""
    faults: dict[str | None, list[Any]] = {}
    for spec in DEMO_FAULTS:
        unit, event = parse_fault(spec)
        if unit in units:
            faults.setdefault(unit, []).append(event)
    design = unit_design(real or find_plant(DEMO_PLANT))
    return SimulationPlan(
        plant=plant, units=units, faults=faults, backfill=60, seed=seed, design=design
    )


#: The embedded broker's port unless --port says otherwise (the MQTT default, so
#: ``mosquitto_sub -t 'plant/k_gudem_new/+/alerts'`` works), or any free port if it is taken.
DEFAULT_BROKER_PORT = 1883
#: The checkout this package runs from (an editable install), whose models/ the demo uses.
CHECKOUT = Path(__file__).resolve().parents[2]


def default_models_dir() -> Path:
    """``models`` in the working directory if it holds a set, else the checkout's."""
    here = Path("models")
    if (here / "manifest.json").is_file():
        return here
    return CHECKOUT / "models"


def missing_models_message(models: Path) -> str:
    """What to do when there is no model set, from wherever the demo was started."""
    where = models.absolute()
    fix = (
        "pass --models DIR with a model set (a directory holding manifest.json and the "
        "ONNX files: the checkout's models/, or one written by `edge-train train --out DIR`)"
    )
    if (CHECKOUT / "pyproject.toml").is_file() and where == (CHECKOUT / "models").absolute():
        fix = (
            f"restore the shipped set (`git -C {CHECKOUT} checkout models`), retrain it "
            f"(`make -C {CHECKOUT} models`), or {fix}"
        )
    return f"no model set in {where} ({where / 'manifest.json'} not found): {fix}"


def demo_settings(
    host: str,
    port: int,
    protocol: str,
    units: list[str],
    models: Path,
    state_dir: Path,
    metrics_port: int,
    plant: Plant | None = None,
) -> AgentSettings:
    real = plant or find_plant(DEMO_PLANT)
    return load_settings(
        None,
        agent_id="demo",
        plant=real.slug,
        plant_info={
            "name": real.name,
            "gppd_id": real.gppd_id,
            "fuel": real.fuel,
            "capacity_mw": real.capacity_mw,
            "latitude": real.latitude,
            "longitude": real.longitude,
        },
        state_dir=state_dir,
        mqtt={"host": host, "port": port, "protocol": protocol, "keepalive": 10},
        topics={"publish_scores": True},
        units=[{"name": u, "limits": DEMO_LIMITS} for u in units],
        models={"dir": models},
        alarm={"on_delay": 3, "off_delay": 10},
        metrics={"port": metrics_port},
        logging={"level": "WARNING", "format": "console"},
    )


def _clock_time(text: Any) -> str:
    """``2026-11-29T05:08:51.000Z`` → ``05:08:51`` (UTC, as in the alert)."""
    return str(text)[11:19] if isinstance(text, str) and len(text) >= 19 else "--:--:--"


def format_alert(payload: bytes) -> str:
    """One line per alert: time, unit, state, severity, message (and the episode id)."""
    a: dict[str, Any] = orjson.loads(payload)
    state = a.get("state", "?")
    if state == "raised" and a.get("ts") != a.get("raised_at"):
        state = "changed"  # a limit alarm moved to another level (same episode)
    message = a.get("message") or a.get("kind", "?")
    return (
        f"ALERT {_clock_time(a.get('ts'))} {a.get('unit')} {state:8s} {a.get('severity', '?'):6s} "
        f"{message}{' (resent)' if a.get('resent') else ''} "
        f"[{a.get('kind')} {str(a.get('alert_id'))[:8]}]"
    )


class AlarmBoard:
    """Which alarms stand, as a subscriber of the alert topic sees them (for the status line)."""

    def __init__(self) -> None:
        self._active: dict[str, tuple[str, str]] = {}  # alert_id -> (unit, kind)

    def update(self, payload: bytes) -> None:
        try:
            a = orjson.loads(payload)
            alert_id, unit, kind, state = a["alert_id"], a["unit"], a["kind"], a["state"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if state == "raised":
            self._active[alert_id] = (unit, kind)
        elif state == "cleared":
            self._active.pop(alert_id, None)

    def units_in_alarm(self) -> str:
        """``unit1 (limit), unit2 (anomaly, limit)`` or ``none``."""
        kinds: dict[str, set[str]] = {}
        for unit, kind in self._active.values():
            kinds.setdefault(unit, set()).add(kind)
        if not kinds:
            return "none"
        return ", ".join(f"{u} ({', '.join(sorted(k))})" for u, k in sorted(kinds.items()))


async def _print_alerts(
    host: str, port: int, plant: str, ready: asyncio.Event, board: AlarmBoard
) -> None:
    async with aiomqtt.Client(host, port, identifier="edge-demo-console") as client:
        await client.subscribe(f"plant/{plant}/+/alerts", qos=1)
        ready.set()
        async for message in client.messages:
            payload = bytes(message.payload)
            board.update(payload)
            print(format_alert(payload), flush=True)


def _sample(metrics: Metrics, name: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                total += s.value
    return total


async def _print_status(metrics: Metrics, every: float, started: float, board: AlarmBoard) -> None:
    while True:
        await asyncio.sleep(every)
        p = "edge_agent_"
        print(
            f"status t={time.time() - started:5.0f}s "
            f"received={_sample(metrics, p + 'messages_received_total'):.0f} "
            f"rejected={_sample(metrics, p + 'messages_rejected_total'):.0f} "
            f"scored={_sample(metrics, p + 'steps_scored_total'):.0f} "
            f"alerts raised={_sample(metrics, p + 'alerts_raised_total'):.0f} "
            f"published={_sample(metrics, p + 'alerts_published_total'):.0f} "
            f"outbox={_sample(metrics, p + 'outbox_depth'):.0f} "
            f"connected={_sample(metrics, p + 'broker_connected'):.0f} "
            f"in alarm: {board.units_in_alarm()}",
            flush=True,
        )


def _start_console(
    host: str, port: int, protocol: str, plant: str, models: Path, web_port: int
) -> subprocess.Popen[bytes] | None:
    """The control-room console (``edge_console``) beside the demo, if it is installed.

    A separate process, found by name and never imported: the agent does not depend on it.
    """
    if (
        importlib.util.find_spec("edge_console") is None
        or importlib.util.find_spec("nicegui") is None
    ):
        print("console not installed (pip install -e '.[console]'): not started", flush=True)
        return None
    command = [sys.executable, "-m", "edge_console", "demo", "--plant", plant]
    command += ["--mqtt-host", host, "--mqtt-port", str(port), "--protocol", protocol]
    command += ["--port", str(web_port), "--models", str(models)]
    return subprocess.Popen(command)


async def _console_ready(proc: subprocess.Popen[bytes], web_port: int, timeout: float) -> bool:
    """Wait until the console is subscribed (its health says so), so it sees every alert."""
    url = f"http://127.0.0.1:{web_port}/api/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            body = await asyncio.to_thread(_get, url)
            if orjson.loads(body).get("broker_connected"):
                return True
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.2)
    return False


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        body: bytes = response.read()
        return body


def _stop_console(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def _demo(args: argparse.Namespace) -> int:
    broker: Any = None
    if args.broker:
        host, port = parse_broker_url(args.broker)
        protocol = "5"
    else:
        from amqtt.broker import Broker

        host, protocol = "127.0.0.1", "3.1.1"
        port = args.port if args.port is not None else free_port(DEFAULT_BROKER_PORT)
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await broker.start()
        print(f"embedded MQTT broker (amqtt) on {host}:{port}", flush=True)
    units = [f"unit{i + 1}" for i in range(args.units)]
    state = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    settings = demo_settings(host, port, protocol, units, args.models, state, args.metrics_port)
    metrics = Metrics()
    server = Server(settings, metrics=metrics)
    server.install_signal_handlers()
    started = time.time()
    serve = asyncio.create_task(server.serve(), name="agent")
    tasks: list[asyncio.Task[Any]] = []
    stop = asyncio.Event()
    console: subprocess.Popen[bytes] | None = None
    try:
        while server.link is None and not serve.done():
            await asyncio.sleep(0.05)
        if serve.done():
            serve.result()
        assert server.link is not None
        wait = 30.0 if args.duration is None else min(30.0, args.duration)
        if not await server.link.wait_connected(timeout=wait):
            print(f"error: cannot connect to the MQTT broker at {host}:{port}", file=sys.stderr)
            return 2
        print(
            f"agent connected; metrics on http://{settings.metrics.host}:{server.metrics_port}/metrics",
            flush=True,
        )
        printer_ready = asyncio.Event()
        board = AlarmBoard()
        tasks.append(
            asyncio.create_task(_print_alerts(host, port, settings.plant, printer_ready, board))
        )
        await asyncio.wait_for(printer_ready.wait(), 10)
        if args.console:
            web_port = free_port(args.console_port)
            console = _start_console(host, port, protocol, settings.plant, args.models, web_port)
            if console is not None and not await _console_ready(console, web_port, 30.0):
                print("warning: the console did not come up; the demo goes on", flush=True)
        topic = f"plant/{settings.plant}/+/alerts"
        print(
            "alerts: time (UTC) unit state severity message [kind id]; subscribe yourself: "
            f"mosquitto_sub -h {host} -p {port} -t '{topic}'",
            flush=True,
        )
        tasks.append(asyncio.create_task(_print_status(metrics, args.status_every, started, board)))
        real = find_plant(DEMO_PLANT)
        plan = demo_plan(settings.plant, units, seed=args.seed, real=real)
        print(
            f"simulating {len(units)} unit(s) of {real.name} ({real.gppd_id}, {real.fuel}, "
            f"{real.capacity_mw:g} MW, {real.unit_mw:.0f} MW units; data: Global Power Plant "
            f"Database, WRI, CC BY 4.0); faults: {', '.join(DEMO_FAULTS)}",
            flush=True,
        )

        async def simulate() -> None:
            async with aiomqtt.Client(host, port, identifier="edge-demo-plant") as client:
                await publish_simulation(client, plan, stop=stop)

        tasks.append(asyncio.create_task(simulate()))
        waiters: list[asyncio.Future[Any]] = [serve, *tasks]
        timeout = (
            None if args.duration is None else max(0.0, args.duration - (time.time() - started))
        )
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not serve and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        stop.set()
        server.handle_exit()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, 8)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(_stop_console, console)
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()
    print("demo stopped", flush=True)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    configure_logging("WARNING", "console")
    if args.models is None:
        args.models = default_models_dir()
    if not (args.models / "manifest.json").is_file():
        print(f"error: {missing_models_message(args.models)}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 0
    except ConfigError as exc:
        for line in exc.problems:
            if line.startswith("config key metrics.port:"):
                line += " (the demo's option: --metrics-port N)"
            print(f"error: {line}", file=sys.stderr)
        return 2
