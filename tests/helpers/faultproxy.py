"""A TCP proxy on a loopback port in front of a service, which a test takes down and brings back:
"the S3 endpoint is down" as clients see it (connections reset, then refused), while the service
behind it (moto's in-memory server, whose data a restart would lose) keeps running.

``down_at(b"PUT ", n)`` arms it: the ``n``-th request of that method passing through goes
nowhere; the proxy resets every connection and refuses new ones from then on (a push cut in the
middle: the requests before it went through). ``up()`` listens again on the same port.
"""

from __future__ import annotations

import socket
import struct
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int, port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.addr = (host, port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._armed: tuple[bytes, int] | None = None
        self._seen = 0
        #: set when an armed proxy went down; ``tripped_at`` is its time.monotonic()
        self.tripped = threading.Event()
        self.tripped_at: float | None = None
        self.refused = 0  # connections refused or reset while down (observability of the fault)

    @property
    def url(self) -> str:
        return f"http://{self.addr[0]}:{self.addr[1]}"

    # -- lifecycle
    def up(self) -> FaultProxy:
        with self._lock:
            if self._listener is not None:
                return self
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for _ in range(50):  # the port may linger for a moment after down()
                try:
                    listener.bind(self.addr)
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                listener.bind(self.addr)
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        """Refuse new connections and reset the open ones (RST, as when a host goes away)."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
            self._armed = None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for conn in conns:
            self.refused += 1
            _reset(conn)

    def down_at(self, method: bytes, nth: int) -> None:
        with self._lock:
            self._armed, self._seen = (method, nth), 0
            self.tripped.clear()
            self.tripped_at = None

    # -- forwarding
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    _reset(client)
                    _reset(upstream)
                    continue
                self._conns.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                armed = self._armed if from_client else None
                if armed:
                    method, nth = armed
                    pattern = method + b"/"
                    window = tail + data
                    tail = window[-(len(pattern) - 1):]  # shorter than the pattern: nothing counted twice
                    with self._lock:
                        self._seen += window.count(pattern)
                        trip = self._armed is not None and self._seen >= nth
                    if trip:
                        self.tripped_at = time.monotonic()
                        self.tripped.set()
                        self.down()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def _reset(conn: socket.socket) -> None:
    try:  # SO_LINGER 0: close() sends RST instead of FIN
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass
