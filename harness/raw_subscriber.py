"""A minimal MQTT 3.1.1 subscriber on a plain socket, in a thread (benchmarks, footprint).

A Python MQTT client tops out near the ingest ceiling this project measures; counting 10 k
score messages/s needs less per message than that.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from harness.net import HOST
from harness.raw_mqtt import (
    DISCONNECT_PACKET,
    PUBLISH,
    SUBACK,
    puback_packet,
    raw_connect,
    subscribe_packet,
)


class RawSubscriber:
    """Subscribes to ``filters`` and calls ``on_message(topic, payload, arrival)``.

    Acknowledges QoS 1 deliveries (PUBACK) and calls back from its thread, where ``arrival``
    is the wall-clock time the chunk holding the message was read. Reconnects (same client
    id, clean session off) when the broker goes away, until :meth:`close`.
    """

    def __init__(
        self,
        port: int,
        filters: list[tuple[str, int]],
        on_message: Callable[[str, bytes, float], None],
        *,
        client_id: str = "bench-subscriber",
        host: str = HOST,
    ) -> None:
        self.port, self.host, self.filters = port, host, filters
        self.on_message = on_message
        self.client_id = client_id
        self.subscribed = threading.Event()
        self.reconnects = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="raw-subscriber")

    def start(self, timeout: float = 10.0) -> RawSubscriber:
        self._thread.start()
        if not self.subscribed.wait(timeout):
            raise RuntimeError(f"subscriber could not subscribe on port {self.port}")
        return self

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.sendall(DISCONNECT_PACKET)
                self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def _connect(self) -> socket.socket:
        sock = raw_connect(
            self.port,
            self.client_id,
            host=self.host,
            keepalive=0,
            clean_session=False,  # keep subscriptions across reconnects
            sockopts=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)],
            timeout=2.0,
        )
        sock.sendall(subscribe_packet(self.filters))
        sock.settimeout(0.5)
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sock = self._connect()
            except OSError:
                time.sleep(0.1)
                continue
            with contextlib.suppress(OSError):
                self._read(self._sock)
            if not self._stop.is_set():
                self.reconnects += 1
                time.sleep(0.05)

    def _read(self, sock: socket.socket) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                return
            arrival = time.time()
            buf += chunk
            pos, acks = 0, []
            n = len(buf)
            while pos < n:
                header = buf[pos]
                length, mult, i = 0, 1, pos + 1
                while i < n:
                    b = buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    break  # incomplete length
                if i + length > n:
                    break  # incomplete packet
                kind = header >> 4
                if kind == PUBLISH:
                    qos = (header >> 1) & 3
                    tlen = (buf[i] << 8) | buf[i + 1]
                    topic = bytes(buf[i + 2 : i + 2 + tlen]).decode()
                    j = i + 2 + tlen
                    if qos:
                        acks.append(puback_packet(bytes(buf[j : j + 2])))
                        j += 2
                    self.on_message(topic, bytes(buf[j : i + length]), arrival)
                elif kind == SUBACK:
                    self.subscribed.set()
                pos = i + length
            del buf[:pos]
            if acks:
                sock.sendall(b"".join(acks))
