"""Structured logging for the agent: JSON lines for journald/Docker, readable text on a terminal.

Both structlog loggers and stdlib loggers (aiomqtt, paho, asyncio) go through one handler on
the root logger, so every line has the same shape. Secrets never reach the output: any field
named like a password, secret or token is masked, and known secret *values* (the MQTT
password) are masked wherever they appear in a string.

The only global state is structlog's configuration and the one handler this module installs on
the root logger (replaced, not stacked, when :func:`configure_logging` runs again).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Collection, Mapping
from typing import Any, Literal, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]

REDACTED = "***"

#: Field names whose values are secrets (matched anywhere in the name, any case).
_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|pwd|secret|token|api[_-]?key|credential|authorization", re.I
)
#: ...unless the name says it holds where the secret lives, not the secret itself.
_LOCATION_SUFFIXES = ("_file", "_path", "_dir")


class _AgentHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the root handler installed here, so reconfiguring replaces it."""


class RedactSecrets:
    """structlog processor masking secret fields (recursively) and known secret values."""

    def __init__(self, secret_values: Collection[str] = ()) -> None:
        # Very short "secrets" would mask unrelated text; a real password is longer.
        self._values = tuple(v for v in secret_values if len(v) >= 4)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {k: self._clean(k, v) for k, v in event_dict.items()}

    def _clean(self, key: str, value: Any) -> Any:
        if _is_secret_key(key) and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self._mask(value)
        if isinstance(value, Mapping):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean("", v) for v in value]
        return value

    def _mask(self, text: str) -> str:
        for secret in self._values:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not key.lower().endswith(_LOCATION_SUFFIXES)


def _orjson_dumps(obj: Any, **kw: Any) -> str:
    return orjson.dumps(obj, default=kw.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty())


def _use_json(fmt: LogFormat, stream: TextIO) -> bool:
    return not _is_tty(stream) if fmt == "auto" else fmt == "json"


def configure_logging(
    level: str,
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    *,
    secret_values: Collection[str] = (),
) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) at ``level``.

    ``fmt="auto"`` writes JSON lines unless ``stream`` is a terminal. ``secret_values`` (e.g.
    the resolved MQTT password) are masked wherever they appear in a logged string.
    """
    out = stream if stream is not None else sys.stderr
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}")
    as_json = _use_json(fmt, out)

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    final: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        RedactSecrets(secret_values),
    ]
    if as_json:
        final += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_orjson_dumps),
        ]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=_is_tty(out)))

    handler = _AgentHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=final,
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AgentHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: keeps structlog.testing.capture_logs usable after configuration.
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """A logger with ``bound`` key/values on every line (e.g. ``unit=...``, ``component=...``).

    The logger is lazy: it follows the configuration in force when it logs, so module-level
    loggers created before :func:`configure_logging` still end up in the right place.
    """
    return cast(FilteringBoundLogger, structlog.get_logger("edge_agent", **bound))
