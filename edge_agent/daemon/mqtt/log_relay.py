"""paho's and aiomqtt's warnings, relayed to our log, the latest kept with its exception.

When a connection dies before the broker's CONNACK (a TLS listener demanding a client
certificate, a plain client on a TLS port) aiomqtt ignores the disconnect and only times
out; the real reason is in paho's "failed to receive on socket: %s" warning, whose argument
is the exception itself. :class:`LibraryWarning` keeps that exception, so
:func:`~edge_agent.daemon.mqtt.errors.describe_error` classifies it by type, not by text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger


@dataclass(frozen=True, slots=True)
class LibraryWarning:
    """One warning of the MQTT library: its text, and the exception it was about (if any)."""

    message: str
    error: BaseException | None = None


class PahoLogRelay(logging.Handler):
    """Passes paho's and aiomqtt's warnings to our log at debug and keeps the latest one."""

    def __init__(self, log: FilteringBoundLogger) -> None:
        super().__init__(logging.WARNING)
        self._log = log
        self.last: LibraryWarning | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        error = next((a for a in args if isinstance(a, BaseException)), None)
        if error is None and record.exc_info is not None:
            error = record.exc_info[1]
        self.last = LibraryWarning(record.getMessage(), error)
        self._log.debug("mqtt_library_warning", message=self.last.message)

    def logger(self) -> logging.Logger:
        """A logger for one client; not registered with ``logging``, so it never propagates."""
        lib_log = logging.Logger("edge_agent.daemon.mqtt.paho", logging.WARNING)
        lib_log.addHandler(self)
        return lib_log
