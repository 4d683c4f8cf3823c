"""A TCP proxy on 127.0.0.1 that injects network faults between the agent and the backend.

One selector loop in one named thread forwards every connection; the test switches the fault mode at
any time from its own thread (every public method is thread-safe):

* ``passthrough()``: forward everything (connections held in a blackhole resume).
* ``refuse()``: close the listening socket, so new connections get ECONNREFUSED, and reset (RST) every
  open connection: the server went away.
* ``reset(after_bytes)``: every connection (open or new) is reset with an RST (SO_LINGER 0) once it has
  carried ``after_bytes`` more bytes, in either direction: a request or a response cut in the middle.
* ``blackhole()``: accept connections but never answer; open connections stop moving too.
* ``slow(bytes_per_second)``: forward at most that many bytes per second in each direction (the whole link).

Independently of the mode, three rules pick requests by what the client sends (a regex over the bytes, in
practice an HTTP request line such as ``rb"HEAD /bucket/"``): ``hold(pattern)`` stalls the connection until
``release()`` (to order one request after another on purpose); ``reject(pattern)`` resets it at once (a
partial outage: S3 failing while SQS answers); ``answer(pattern, status, body)`` replies in the backend's
place (an error the backend would give, such as 403 AccessDenied). ``release()`` ends all three.

``stop()`` closes every socket and joins the thread.
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)
CHUNK = 65536
TICK = 0.01  # the loop's longest sleep: how fast a slow link refills and a mode change applies


@dataclass
class _Side:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)  # bytes waiting to be written to this socket
    eof: bool = False  # the peer of this socket closed its sending side


@dataclass
class _Pair:
    ident: int
    client: _Side
    upstream: _Side | None = None
    budget: int | None = None  # bytes left before a reset (reset mode), None: unlimited
    held: bool = False  # the client sent the held pattern: nothing moves until release()
    closed: bool = False


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        assert parts.hostname and parts.port, upstream_url
        self.upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._mode = "pass"
        self._reset_after = 0
        self._rate = 0
        self._changed = True  # the loop applies a mode change to the open connections
        self._applied = threading.Event()  # set by the loop once it has applied the last change
        self._hold: re.Pattern[bytes] | None = None
        self._reject: re.Pattern[bytes] | None = None
        self._answer: tuple[re.Pattern[bytes], bytes] | None = None
        self.held_requests = 0
        self.rejected_requests = 0
        self.answered_requests = 0
        self._stop = threading.Event()
        self._pairs: dict[int, _Pair] = {}
        self._next_id = 0
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._listener: socket.socket | None = None
        self.port = 0
        self._open_listener()
        self._tokens = {"up": 0.0, "down": 0.0}
        self._last_refill = time.monotonic()
        self.stats = {"accepted": 0, "resets": 0, "refused_listener_closes": 0, "bytes_up": 0, "bytes_down": 0}
        self._thread = threading.Thread(target=self._loop, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    # --- the test's controls -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def passthrough(self) -> None:
        self._set("pass")

    def refuse(self) -> None:
        self._set("refuse")

    def reset(self, after_bytes: int = 0) -> None:
        self._set("reset", reset_after=after_bytes)

    def blackhole(self) -> None:
        self._set("blackhole")

    def slow(self, bytes_per_second: int) -> None:
        assert bytes_per_second > 0
        self._set("slow", rate=bytes_per_second)

    def hold(self, pattern: bytes) -> None:
        """Stall connections whose client sends bytes matching ``pattern`` (a regex) until release()."""
        with self._lock:
            self._hold = re.compile(pattern)
        self._wake()

    def reject(self, pattern: bytes) -> None:
        """Reset (RST) connections whose client sends bytes matching ``pattern``, before anything is forwarded."""
        with self._lock:
            self._reject = re.compile(pattern)
        self._wake()

    def answer(self, pattern: bytes, status: int, body: bytes, content_type: str = "application/xml") -> None:
        """Reply to requests matching ``pattern`` with this HTTP response (then close), never forwarding them."""
        head = (
            f"HTTP/1.1 {status} Proxy Says So\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        with self._lock:
            self._answer = (re.compile(pattern), head.encode() + body)
        self._wake()

    def release(self) -> None:
        with self._lock:
            self._hold = None
            self._reject = None
            self._answer = None
            for pair in self._pairs.values():
                pair.held = False
        self._wake()

    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for p in self._pairs.values() if not p.closed)

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the fault proxy thread did not stop"
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _set(self, mode: str, *, reset_after: int = 0, rate: int = 0) -> None:
        with self._lock:
            self._mode = mode
            self._reset_after = reset_after
            self._rate = rate
            self._changed = True
            self._applied.clear()
        log.info("fault proxy %d: %s", self.port, mode)
        self._wake()
        # Once this returns, every connection, open or new, is under the new mode: after refuse() a new
        # connection is refused, after passthrough() it is accepted.
        if self._thread.is_alive() and not self._applied.wait(5):
            raise RuntimeError("the fault proxy loop did not apply the mode change")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except BlockingIOError:  # the buffer is full: the loop is awake anyway
            pass

    # --- the listening socket (opened in __init__, then only by the loop) -------------------------------------

    def _open_listener(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(128)
            sock.setblocking(False)
            self.port = sock.getsockname()[1]
            self._listener = sock
            self._sel.register(sock, selectors.EVENT_READ, ("listen", None))

    def _close_listener(self) -> None:
        with self._lock:
            sock, self._listener = self._listener, None
            if sock is None:
                return
            self._sel.unregister(sock)
            sock.close()
            self.stats["refused_listener_closes"] += 1

    # --- the loop -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    mode, rate, changed = self._mode, self._rate, self._changed
                    self._changed = False
                if changed:
                    self._apply_mode(mode)
                    self._applied.set()
                self._refill(mode, rate)
                self._update_interest(mode)
                for key, events in self._sel.select(TICK):
                    kind, pair = key.data
                    if kind == "wake":
                        self._drain_wake()
                    elif kind == "listen":
                        self._accept(mode)
                    elif kind == "conn" and pair is not None and not pair.closed:
                        self._service(pair, key.fileobj, events, mode)  # type: ignore[arg-type]
        finally:
            for pair in list(self._pairs.values()):
                self._close(pair, rst=False)
            self._close_listener()
            self._sel.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _apply_mode(self, mode: str) -> None:
        """In the loop thread (the only one that touches the selector): listener, then open connections."""
        if mode == "refuse":
            self._close_listener()
        else:
            self._open_listener()
        with self._lock:
            after = self._reset_after
        for pair in list(self._pairs.values()):
            if mode == "refuse":
                self._close(pair, rst=True)
            elif mode == "reset":
                pair.budget = after
                if after <= 0:
                    self._close(pair, rst=True)
            else:
                pair.budget = None
                if pair.upstream is None and mode != "blackhole":
                    self._connect_upstream(pair)

    def _refill(self, mode: str, rate: int) -> None:
        now = time.monotonic()
        elapsed, self._last_refill = now - self._last_refill, now
        if mode != "slow":
            return
        for d in self._tokens:
            # At most a quarter of a second of burst: the link stays slow, never bursty.
            self._tokens[d] = min(rate / 4, self._tokens[d] + rate * elapsed)

    def _update_interest(self, mode: str) -> None:
        for pair in self._pairs.values():
            if pair.closed:
                continue
            for side, other in ((pair.client, pair.upstream), (pair.upstream, pair.client)):
                if side is None:
                    continue
                events = 0
                moving = mode != "blackhole" and other is not None and not pair.held
                # Read only when the other side's buffer has room (backpressure), the link has bytes to give
                # (slow mode) and data may move at all (blackhole).
                if moving and not side.eof and len(other.out) < CHUNK * 4:  # type: ignore[union-attr]
                    direction = "up" if side is pair.client else "down"
                    if mode != "slow" or self._tokens[direction] >= 1:
                        events |= selectors.EVENT_READ
                if moving and side.out:
                    events |= selectors.EVENT_WRITE
                self._want(side.sock, events, pair)

    def _want(self, sock: socket.socket, events: int, pair: _Pair) -> None:
        key = self._sel.get_map().get(sock)
        if events == 0:
            if key is not None:
                self._sel.unregister(sock)
        elif key is None:
            self._sel.register(sock, events, ("conn", pair))
        elif key.events != events:
            self._sel.modify(sock, events, ("conn", pair))

    def _accept(self, mode: str) -> None:
        with self._lock:
            listener = self._listener
        if listener is None:
            return
        while True:
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_id += 1
            pair = _Pair(self._next_id, _Side(sock))
            with self._lock:
                self._pairs[pair.ident] = pair
                after = self._reset_after
            self.stats["accepted"] += 1
            if mode == "reset":
                pair.budget = after
                if after <= 0:
                    self._close(pair, rst=True)
                    continue
            if mode == "refuse":  # accepted in the instant before the listener closed
                self._close(pair, rst=True)
                continue
            if mode != "blackhole":
                self._connect_upstream(pair)

    def _connect_upstream(self, pair: _Pair) -> None:
        try:
            up = socket.create_connection(self.upstream, timeout=2)
        except OSError as exc:
            log.warning("fault proxy: upstream %s unreachable: %s", self.upstream, exc)
            self._close(pair, rst=True)
            return
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair.upstream = _Side(up)

    def _service(self, pair: _Pair, sock: socket.socket, events: int, mode: str) -> None:
        assert pair.upstream is not None
        side, other = (pair.client, pair.upstream) if sock is pair.client.sock else (pair.upstream, pair.client)
        direction = "up" if side is pair.client else "down"
        if events & selectors.EVENT_READ:
            limit = CHUNK
            if mode == "slow":
                limit = min(limit, int(self._tokens[direction]))
            if pair.budget is not None:
                limit = min(limit, max(1, pair.budget))
            if limit > 0:
                try:
                    data = sock.recv(limit)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    self._close(pair, rst=True)
                    return
                if data is not None:
                    if not data:
                        side.eof = True
                    else:
                        if side is pair.client:
                            rule = self._rule_for(data)
                            if rule == "reject":
                                self.rejected_requests += 1
                                self._close(pair, rst=True)
                                return
                            if rule == "answer":
                                self.answered_requests += 1
                                self._reply(pair)
                                return
                            if rule == "hold":
                                pair.held = True
                                self.held_requests += 1
                        other.out += data
                        self.stats[f"bytes_{direction}"] += len(data)
                        if mode == "slow":
                            self._tokens[direction] -= len(data)
                        if pair.budget is not None:
                            pair.budget -= len(data)
        if events & selectors.EVENT_WRITE and side.out and not pair.held:
            try:
                sent = sock.send(side.out)
                del side.out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close(pair, rst=True)
                return
        if pair.budget is not None and pair.budget <= 0:
            self._flush_quietly(pair)
            self._close(pair, rst=True)
            return
        # A side that has closed and whose data has been delivered ends the connection (HTTP needs no half-close).
        for a, b in ((pair.client, pair.upstream), (pair.upstream, pair.client)):
            if a.eof and not b.out:
                self._flush_quietly(pair)
                self._close(pair, rst=False)
                return

    def _rule_for(self, data: bytes) -> str | None:
        with self._lock:
            hold, reject, answer = self._hold, self._reject, self._answer
        if reject is not None and reject.search(data):
            return "reject"
        if answer is not None and answer[0].search(data):
            return "answer"
        if hold is not None and hold.search(data):
            return "hold"
        return None

    def _reply(self, pair: _Pair) -> None:
        """Send the canned response (the request may still be arriving: it is dropped) and close."""
        with self._lock:
            response = self._answer[1] if self._answer else b""
        sock = pair.client.sock
        try:
            sock.setblocking(True)
            sock.settimeout(2)
            sock.sendall(response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._close(pair, rst=False)

    @staticmethod
    def _flush_quietly(pair: _Pair) -> None:
        for side in (pair.client, pair.upstream):
            if side is not None and side.out:
                try:
                    side.sock.send(side.out)
                except OSError:
                    pass
                side.out.clear()

    def _close(self, pair: _Pair, *, rst: bool) -> None:
        if pair.closed:
            return
        pair.closed = True
        if rst:
            self.stats["resets"] += 1
        for side in (pair.client, pair.upstream):
            if side is None:
                continue
            if rst:
                try:  # SO_LINGER on, timeout 0: close() sends RST instead of FIN
                    side.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            try:
                self._sel.unregister(side.sock)
            except (KeyError, ValueError):
                pass
            side.sock.close()
        with self._lock:
            self._pairs.pop(pair.ident, None)
