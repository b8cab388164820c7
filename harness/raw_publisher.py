"""A publish-only MQTT 3.1.1 connection on a plain socket (the benchmarks' load generator).

The caller builds packets (:meth:`RawPublisher.packet`) and writes many in one ``sendall``;
QoS 1 acknowledgements are counted by a reader thread. Reconnecting is the caller's.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from harness.raw_mqtt import DISCONNECT_PACKET, publish_packet, raw_connect


class RawPublisher:
    """One MQTT 3.1.1 connection that only publishes; reconnects on demand."""

    def __init__(self, host: str, port: int, client_id: str, qos: int) -> None:
        self.host, self.port, self.client_id, self.qos = host, port, client_id, qos
        self.sock: socket.socket | None = None
        self.acked = 0
        self._next_id = 1
        self._reader: threading.Thread | None = None

    def connect(self, timeout: float = 5.0) -> None:
        sock = raw_connect(
            self.port,
            self.client_id,
            host=self.host,
            keepalive=0,
            sockopts=[
                (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                (socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024),
            ],
            timeout=timeout,
        )
        sock.settimeout(None)
        self.sock = sock
        if self.qos:
            self._reader = threading.Thread(target=self._read_acks, args=(sock,), daemon=True)
            self._reader.start()

    def _read_acks(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            n = len(buf) // 4  # PUBACK is always 4 bytes: 0x40 0x02 id id
            self.acked += n
            buf = buf[n * 4 :]

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        if not self.qos:
            return publish_packet(topic, payload)
        pid = self._next_id
        self._next_id = pid % 65535 + 1
        return publish_packet(topic, payload, 1, pid)

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise ConnectionError("not connected")
        self.sock.sendall(data)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(DISCONNECT_PACKET)
                self.sock.shutdown(socket.SHUT_WR)
            if self._reader is not None and self.qos:
                self._reader.join(timeout=5)
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
