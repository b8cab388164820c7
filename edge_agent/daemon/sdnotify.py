"""systemd's sd_notify protocol without a dependency: one datagram per state change.

systemd (Type=notify) waits for ``READY=1`` before it calls the agent started, restarts it when
``WATCHDOG=1`` stops arriving for WatchdogSec, and shows ``STATUS=`` in ``systemctl status``.
Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op, so the agent runs the same
under Docker, in tests and on a developer's laptop. Sending never raises: a lost notification
must not take the agent down.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class SystemdNotifier:
    """Sends sd_notify messages to the socket named by ``NOTIFY_SOCKET`` (path or ``@abstract``)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Startup finished: the broker is connected and models are loaded."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """A reload (SIGHUP) started; follow with :meth:`ready` when it is done."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        """Shutdown started; systemd stops expecting watchdog pings."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Still alive: send at least every :meth:`watchdog_interval` seconds."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WatchdogSec), or None when not watched."""
        return self._watchdog_interval

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; False when not under systemd or the send failed."""
        if self._address is None:
            return False
        message = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self._address)
        except OSError:
            # systemd gone or restarting: nothing useful to do, and never worth crashing for.
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _socket_address(value: str) -> str | bytes | None:
    if not value or not (value.startswith(("/", "@"))):
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@'.
        return b"\0" + value[1:].encode("utf-8")
    return value


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None  # the watchdog is meant for another process (e.g. our parent)
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None
