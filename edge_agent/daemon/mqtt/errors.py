"""Why a connection failed, in words an operator can act on: by codes and types, not text.

Every decision here reads a code or a type the libraries offer:

* a refused CONNACK is an ``aiomqtt.MqttConnectError`` whose ``rc`` is paho's ``ReasonCode``
  (MQTT 5 values, 0x80 and above; paho 2 maps a 3.1.1 return code onto them) or, as
  aiomqtt's type also allows, a 3.1.1 return code as an int;
* a failure before CONNACK is an ``aiomqtt.MqttError`` that aiomqtt raises ``from None``
  over the ``OSError`` paho's connect raised: the traceback hides it, ``__context__`` keeps
  it (``ssl.SSLCertVerificationError``, ``ssl.SSLError`` with its OpenSSL ``reason``,
  ``ConnectionRefusedError``, ``socket.gaierror``, an ``errno``);
* a CONNACK that never came is an ``MqttError`` over a ``TimeoutError``; what killed the
  socket meanwhile is the exception paho logged (:class:`~.log_relay.LibraryWarning`);
* the end of message iteration is a plain ``MqttError`` raised *from* the disconnect's
  exception (an explicit ``__cause__``, which no other aiomqtt 2 error carries).

The operator-facing messages still quote ``str(exc)``, but nothing is decided by it.
"""

from __future__ import annotations

import errno
import socket
import ssl

import aiomqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from paho.mqtt.client import connack_string
from paho.mqtt.reasoncodes import ReasonCode

from .log_relay import LibraryWarning

#: CONNACK codes that mean "your credentials": 3.1.1 return codes 4 (bad user name or
#: password) and 5 (not authorised); MQTT 5 reason codes 0x86 and 0x87, the same two.
AUTH_CODES = frozenset({4, 5, 0x86, 0x87})
#: OpenSSL reasons (``ssl.SSLError.reason``) that mean a plain-text peer on the other end.
NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})
#: The TLS 1.3 alert a broker sends when it wants a client certificate and got none.
CERT_REQUIRED_REASONS = frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED"})
#: errno values that mean the network has no way to the broker.
UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})

#: Causes :func:`describe_error` returns (the ``cause`` field of ``mqtt_connect_failed``).
CAUSES = ("auth", "refused", "tls", "unreachable", "timeout", "connection_lost", "config", "error")


def connack_code(rc: int | ReasonCode | None) -> int | None:
    """The numeric CONNACK code, whichever form aiomqtt handed it over in."""
    return rc.value if isinstance(rc, ReasonCode) else rc


def tls_hint(error: ssl.SSLError) -> str:
    """What to check in the settings for a TLS failure, or ``""``."""
    if isinstance(error, ssl.SSLCertVerificationError):  # bad chain or host name
        return " (check mqtt.tls.ca_file and the broker's certificate and host name)"
    if error.reason in CERT_REQUIRED_REASONS:
        return " (the broker wants a client certificate: set mqtt.tls.cert_file and key_file)"
    if error.reason in NOT_TLS_REASONS:
        return " (is this port a TLS listener?)"
    return ""


def _origin(exc: BaseException) -> BaseException | None:
    """The exception aiomqtt wrapped: its explicit cause, else the one it was handling."""
    return exc.__cause__ if exc.__cause__ is not None else exc.__context__


def _ended_by_disconnect(exc: BaseException) -> bool:
    """aiomqtt's "Disconnected during message iteration" (raised from the disconnect)."""
    return not isinstance(exc, MqttCodeError) and exc.__cause__ is not None


def _unreachable(error: BaseException | None) -> bool:
    if isinstance(error, ConnectionRefusedError | socket.gaierror):
        return True
    return isinstance(error, OSError) and error.errno in UNREACHABLE_ERRNOS


def _refusal(exc: MqttConnectError) -> tuple[str, str]:
    rc = exc.rc
    # paho names both forms: a ReasonCode by itself ("Not authorized"), a 3.1.1 return code
    # by its CONNACK meaning (aiomqtt's str() would use paho's unrelated client error texts).
    reason = str(exc) if rc is None else connack_string(rc)
    if connack_code(rc) in AUTH_CODES:
        return "auth", f"broker refused the login ({reason}): check mqtt.username/password"
    return "refused", f"broker refused the connection ({reason})"


def describe_error(
    exc: BaseException,
    socket_error: LibraryWarning | None = None,
    *,
    while_connected: bool = False,
) -> tuple[str, str]:
    """``(cause, message)`` for a connection failure, meant for operators; never secrets.

    cause is one of :data:`CAUSES`. ``socket_error`` is the library's last warning during the
    attempt, which often names the real cause of a time-out or a lost connection.
    """
    if isinstance(exc, MqttConnectError):
        return _refusal(exc)
    if not isinstance(exc, aiomqtt.MqttError):
        # Raised while building the client, before any network I/O: files and settings.
        return "config", f"cannot prepare the connection: {exc}"
    text = str(exc)
    if exc.__cause__ is not None:
        text = f"{text}: {exc.__cause__}"
    detail = f"{text} (last socket error: {socket_error.message})" if socket_error else text
    origin = _origin(exc)
    if while_connected or _ended_by_disconnect(exc):
        return "connection_lost", f"connection lost: {detail}"
    if isinstance(origin, ssl.SSLError):
        return "tls", f"TLS handshake failed: {detail}{tls_hint(origin)}"
    if _unreachable(origin):
        return "unreachable", f"broker not reachable: {detail}"
    if isinstance(origin, TimeoutError):
        died = socket_error.error if socket_error else None
        if isinstance(died, ssl.SSLError):  # the socket died in the handshake; no CONNACK
            return "tls", f"TLS connection failed: {detail}{tls_hint(died)}"
        return "timeout", f"broker did not answer in time: {detail}"
    return "error", detail


def subscription_refused(code: object) -> bool:
    """A SUBACK entry that refused the subscription (0x80 and above)."""
    if isinstance(code, ReasonCode):
        return bool(code.is_failure)
    return isinstance(code, int) and code >= 0x80
