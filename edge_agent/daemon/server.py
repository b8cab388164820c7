"""The agent process: a ``Server`` with one clear lifecycle (startup → serve → shutdown).

Modelled on uvicorn: configuration comes in as one object, signals are handled in one
place (:meth:`Server.install_signal_handlers`), and everything the process owns — the
engine, the outbox, the MQTT link, the metrics endpoint — is created in :meth:`startup` and
released in :meth:`shutdown`. The jobs themselves have their own modules: tick scheduling
(:mod:`.ticker`), alerts out (:mod:`.alert_publisher`), scores out (:mod:`.score_publisher`),
the watchdog (:mod:`.watchdog`), ``/metrics`` (:mod:`.metrics_http`); the engine owns the
pipeline's state and the reload rules (:meth:`Engine.reconfigure`).

Timing rules: intake (``on_message``) only parses and buffers; scoring happens in the
tick loop in batches, the models in a worker thread (:mod:`.scoring_worker`); alert
publishing waits for PUBACKs in its own task, so a slow broker never stalls intake or
scoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from edge_agent import __version__
from edge_agent.config import AgentSettings, ConfigError, load_settings
from edge_agent.daemon.alarm_service import AlarmService, CommandOutcome
from edge_agent.daemon.alert_publisher import AlertHook, AlertPublisher
from edge_agent.daemon.metrics_http import MetricsEndpoint
from edge_agent.daemon.mqtt import MqttLink, command_subscriptions, subscription_topics
from edge_agent.daemon.outbox import Outbox, OutgoingAlert
from edge_agent.daemon.score_publisher import ScorePublisher
from edge_agent.daemon.sdnotify import SystemdNotifier
from edge_agent.daemon.ticker import Ticker
from edge_agent.daemon.watchdog import Watchdog
from edge_agent.logging_setup import get_logger
from edge_agent.metrics import Metrics
from edge_agent.model_loading import load_model_set
from edge_agent.pipeline.engine import Engine, TickResult
from edge_agent.pipeline.manifest import ManifestError
from edge_agent.pipeline.reconfigure import ReloadReport
from edge_agent.pipeline.scoring import ModelSet

#: Shutdown must finish within systemd's patience; the issue asks for 5 s in total.
SHUTDOWN_FLUSH_SECONDS = 2.0
SHUTDOWN_STOP_SECONDS = 1.5
#: How often a degraded outbox retries its storage.
MAINTENANCE_SECONDS = 10.0
#: How often shelve expiry, KPI gauges and retained alarm lists are looked after.
ALARM_HOUSEKEEPING_SECONDS = 0.5
#: A retained alarm list the broker did not take is tried again after this long.
ALARM_LIST_RETRY_SECONDS = 5.0
#: Tasks whose crash ends the process (systemd restarts it): the agent cannot work without.
ESSENTIAL_TASKS = frozenset({"mqtt", "tick", "publisher"})


class TaskCrashed(RuntimeError):
    """An essential task ended with an exception; :meth:`Server.serve` raises it."""


@dataclass
class ServerHooks:
    """Callbacks for embedding the server (the demo prints alerts as they are published)."""

    on_alert_published: AlertHook | None = None
    on_tick: Callable[[TickResult], None] | None = None
    #: Called once, when the agent first reports ready (the CLI freezes the heap here).
    on_ready: Callable[[], object] | None = None


@dataclass
class _State:
    accepting: bool = False
    ready_sent: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    crashed: BaseException | None = None


class Server:
    """One agent: ``await Server(settings).serve()`` runs until SIGTERM/SIGINT."""

    def __init__(
        self,
        settings: AgentSettings,
        config_path: Path | None = None,
        *,
        metrics: Metrics | None = None,
        hooks: ServerHooks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        self.hooks = hooks or ServerHooks()
        self.clock = clock
        self.log = get_logger(component="server", agent_id=settings.agent_id)
        self.notifier = SystemdNotifier()
        self.engine: Engine | None = None
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.alarms: AlarmService | None = None
        self.ticker: Ticker | None = None
        self.alerts: AlertPublisher | None = None
        self.scores: ScorePublisher | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._state = _State()
        self._should_exit = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._alarm_wakeup = asyncio.Event()
        self._replies: set[asyncio.Task[bool]] = set()

    @property
    def model_set(self) -> ModelSet | None:
        """The running model set (the engine's: it owns it)."""
        return self.engine.model_set if self.engine is not None else None

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_endpoint.port if self.metrics_endpoint is not None else None

    # ------------------------------------------------------------------ lifecycle
    async def serve(self) -> None:
        """Start, run until asked to exit, shut down.

        Raises ManifestError on a bad model set, and :class:`TaskCrashed` after shutting
        down when an essential task crashed (so the process exits non-zero).
        """
        await self.startup()
        try:
            await self._should_exit.wait()
        finally:
            await self.shutdown()
        if self._state.crashed is not None:
            raise TaskCrashed(f"task crashed: {self._state.crashed!r}") from self._state.crashed

    def handle_exit(self) -> None:
        """Ask the server to stop (idempotent; called from signal handlers or by embedders)."""
        if not self._should_exit.is_set():
            self.log.info("shutdown requested")
        self._should_exit.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the agent, SIGHUP reloads config and model set."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    async def startup(self) -> None:
        s = self.settings
        self.log.info("starting", version=__version__, models=str(s.models.dir))
        model_set = await asyncio.to_thread(load_model_set, s, None)
        self.engine = engine = Engine(s, model_set, self.metrics)  # publishes model_set_info
        _can_create(s.state_dir)  # the outbox reports (and survives) an unusable state dir
        self.outbox = Outbox(
            s.outbox_path,
            s.outbox.max_rows,
            s.outbox.max_age_seconds,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.alarms = AlarmService(s, engine, self.metrics)
        if s.metrics.enabled:
            self.metrics_endpoint = MetricsEndpoint(s.metrics, self.metrics)
        self.link = link = MqttLink(
            s,
            self.metrics,
            get_logger(component="mqtt", agent_id=s.agent_id),
            subscriptions=[*subscription_topics(s), *command_subscriptions(s)],
            on_message=self._on_message,
            on_connect=self._on_connect,
            on_retained=self.alarms.refuse_retained,
            model_set_version=model_set.version,
            model_trace=model_set.manifest.status_trace,
        )
        self.alerts = AlertPublisher(
            s, self.outbox, link, self.metrics, self.clock, self.hooks.on_alert_published
        )
        self.scores = ScorePublisher(s, link, self.metrics, engine.scores_payload)
        self.ticker = ticker = Ticker(engine, self.metrics, self.clock, self._handle_tick)
        watchdog = Watchdog(self.notifier, lambda: ticker.last_tick, lambda: ticker.interval)
        self._state.accepting = True
        self._spawn(link.run(), "mqtt")
        self._spawn(ticker.run(), "tick")
        self._spawn(self.alerts.run(), "publisher")
        self._spawn(watchdog.run(), "watchdog")
        self._spawn(self._maintenance_loop(), "maintenance")
        self._spawn(self._alarm_loop(), "alarms")
        self.log.info(
            "started",
            model_set=model_set.version,
            units=len(s.units),
            metrics_port=self.metrics_port,
            broker=f"{s.mqtt.host}:{s.mqtt.port}",
        )
        self._repeat_training_warnings(model_set)

    def _repeat_training_warnings(self, model_set: ModelSet) -> None:
        for warning in model_set.manifest.training_warnings:
            self.log.warning(
                "model set training warning", model_set=model_set.version, warning=warning
            )

    async def shutdown(self) -> None:
        """Stop intake, score what is buffered, flush alerts briefly, say ``stopped``, exit."""
        self.log.info("stopping")
        self.notifier.stopping()
        self._state.accepting = False
        if self.ticker is not None:
            try:
                await self.ticker.drain()
            except Exception:  # the alerts already in the outbox must still go out
                self.log.exception("final tick failed")
        if self.link is not None and self.link.connected and self.alerts is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.alerts.drain(), SHUTDOWN_FLUSH_SECONDS)
        if self.link is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.link.stop(final_status=True), SHUTDOWN_STOP_SECONDS)
        for task in self._state.tasks:
            task.cancel()
        await asyncio.gather(*self._state.tasks, return_exceptions=True)
        if self.outbox is not None:
            self.outbox.close()
        if self.alarms is not None:
            self.alarms.close()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        self.log.info("stopped")

    # ------------------------------------------------------------------ intake
    def _on_message(self, topic: str, payload: bytes, received: float) -> None:
        if self.alarms is not None and self.alarms.is_command(topic):
            if self._state.accepting:
                self._on_command(self.alarms.handle_command(topic, payload, self.clock()))
            return
        if self._state.accepting and self.engine is not None and self.ticker is not None:
            self.engine.handle_message(topic, payload, received)
            self.ticker.steps_maybe_ready()

    async def _on_connect(self) -> None:
        if self.alerts is not None:
            self.alerts.connected(self.clock())
        if self.alarms is not None:  # a broker that lost its retained messages gets them back
            self.alarms.mark_all_changed()
            self._alarm_wakeup.set()
        if not self._state.ready_sent:
            self._state.ready_sent = True
            self.notifier.ready()
            self.log.info("ready")
            if self.hooks.on_ready is not None:
                self.hooks.on_ready()

    def _handle_tick(self, result: TickResult) -> None:
        assert self.alarms is not None and self.scores is not None
        # The alarm lifecycle holds back alerts of shelved, suppressed and out-of-service alarms.
        self._put_alerts(self.alarms.process_tick(result, self.clock()))
        self.scores.publish(result)
        if self.hooks.on_tick is not None:
            self.hooks.on_tick(result)

    # ------------------------------------------------------------------ alarm lifecycle
    def _put_alerts(self, alerts: list[OutgoingAlert]) -> None:
        assert self.alerts is not None
        if self.alerts.put(alerts):
            self._alarm_wakeup.set()

    def _on_command(self, outcome: CommandOutcome | None) -> None:
        if outcome is None or self.link is None:
            return
        self._put_alerts(outcome.alerts)  # the audit trail goes through the outbox
        task = asyncio.create_task(self.link.publish(outcome.reply_topic, outcome.reply, qos=1))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)
        self._alarm_wakeup.set()

    async def _alarm_loop(self) -> None:
        """Expire shelves, refresh the KPIs, publish changed retained alarm lists."""
        assert self.alarms is not None and self.link is not None
        lists_retry_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._alarm_wakeup.wait(), ALARM_HOUSEKEEPING_SECONDS)
            self._alarm_wakeup.clear()
            try:
                now = self.clock()
                self._put_alerts(self.alarms.housekeeping(now))
                if not self.link.connected or now < lists_retry_at:
                    continue  # the lists stay marked changed until they can go out
                for unit, topic, payload in self.alarms.take_changed(now):
                    if not await self.link.publish(topic, payload, qos=1, retain=True):
                        # e.g. the broker's ACL refuses the topic: retry, but not in a loop
                        self.alarms.lifecycle.changed.add(unit)
                        if lists_retry_at == 0.0:
                            self.log.warning("alarm list not published, retrying", topic=topic)
                        lists_retry_at = now + ALARM_LIST_RETRY_SECONDS
            except Exception:  # the lifecycle must not take alert publishing down with it
                self.log.exception("alarm housekeeping failed")
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ reload
    def request_reload(self) -> None:
        """SIGHUP: reload config and model set; the old set keeps running if the new one is bad."""
        self._spawn(self.reload(), "reload")

    async def reload(self) -> ReloadReport | None:
        """Reload; the engine applies or refuses each changed key. None: refused entirely."""
        async with self._reload_lock:
            assert self.engine is not None and self.link is not None
            try:
                settings = (
                    await asyncio.to_thread(load_settings, self.config_path)
                    if self.config_path is not None
                    else self.settings
                )
                model_set = await asyncio.to_thread(
                    load_model_set, settings, self.engine.model_set.manifest.sensor_names
                )
                report = self.engine.reconfigure(settings, model_set)
            except (ConfigError, ManifestError, ValueError) as exc:
                self.metrics.reloads.labels("refused").inc()
                self.log.error("reload refused, keeping the running model set", error=str(exc))
                return None
            self.settings = self.engine.settings
            self.metrics.reloads.labels("ok").inc()
            self.log.info("reloaded", model_set=model_set.version)
            self._repeat_training_warnings(model_set)
            await self.link.use_model_set(model_set.version, model_set.manifest.status_trace)
            return report

    # ------------------------------------------------------------------ health
    async def _maintenance_loop(self) -> None:
        """Retry a degraded outbox and keep slow-moving gauges current."""
        assert self.outbox is not None and self.engine is not None and self.alerts is not None
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            if self.outbox.degraded and self.outbox.retry_storage():
                self.log.info("outbox storage recovered")
                self.alerts.wake()
            self.metrics.units_tracked.set(self.engine.units_tracked)

    # ------------------------------------------------------------------ helpers
    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._state.tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task in self._state.tasks and task.get_name() == "reload":
            self._state.tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            structlog.get_logger().error(
                "task crashed", task=task.get_name(), error=repr(task.exception())
            )
            if task.get_name() in ESSENTIAL_TASKS:
                if self._state.crashed is None:
                    self._state.crashed = task.exception()
                self.handle_exit()


def _can_create(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True
