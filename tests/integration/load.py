"""Clients for a serving container, as its users would be: persistent connections doing
set/get (memcached) or keep-alive requests (HTTP), plus a stream of new connections. Bounded:
a fixed number of threads, each stopping at ``stop()`` or after ``max_seconds``, talking only
to 127.0.0.1. Every error a client sees is recorded; so is every request's latency."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mcclient import MemcacheClient


@dataclass
class LoadReport:
    requests: int
    connections: int  # new connections the churn opened
    errors: list[str]
    latencies: list[float] = field(repr=False)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def summary(self) -> str:
        return (f"{self.requests} requests, {self.connections} new connections, "
                f"{len(self.errors)} errors; latency p50 {self.percentile(0.5) * 1000:.1f} ms, "
                f"p99 {self.percentile(0.99) * 1000:.1f} ms, worst {self.worst * 1000:.0f} ms")


class Load:
    """``persistent`` clients and, with ``churn``, one thread opening a new connection for
    each request, until stop() (or ``max_seconds``)."""

    def __init__(self, request: Callable[[int], Callable[[], None]], *, persistent: int,
                 churn: Callable[[], None] | None = None, max_seconds: float = 300.0) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + max_seconds
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.requests = 0
        self.connections = 0
        self._threads = [threading.Thread(target=self._persistent, args=(request, n), daemon=True)
                         for n in range(persistent)]
        if churn is not None:
            self._threads.append(threading.Thread(target=self._churn, args=(churn,), daemon=True))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        """Readiness: every client is connected and has been answered."""
        deadline = time.monotonic() + timeout
        while self.requests < count and not self.errors:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.requests} of {count} requests answered")
            time.sleep(0.01)

    def stop(self) -> LoadReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        with self._lock:
            return LoadReport(self.requests, self.connections, list(self.errors),
                              list(self.latencies))

    def _record(self, started: float, *, new_connection: bool = False) -> None:
        with self._lock:
            self.latencies.append(time.monotonic() - started)
            self.requests += 1
            self.connections += new_connection

    def _failed(self, who: str, err: BaseException) -> None:
        with self._lock:
            self.errors.append(f"{who}: {type(err).__name__}: {err}")

    def _persistent(self, request: Callable[[int], Callable[[], None]], number: int) -> None:
        try:
            one = request(number)
            while self.running():
                started = time.monotonic()
                one()
                self._record(started)
                time.sleep(0.005)
        except Exception as err:  # every failure is the test's finding
            self._failed(f"client {number}", err)

    def _churn(self, churn: Callable[[], None]) -> None:
        while self.running():
            started = time.monotonic()
            try:
                churn()
            except Exception as err:
                self._failed("new connection", err)
                return
            self._record(started, new_connection=True)
            time.sleep(0.01)


def memcached_load(port: int, *, persistent: int = 3, churn: bool = True,
                   max_seconds: float = 300.0) -> Load:
    """Persistent clients, each setting and getting keys of its own and checking the answer,
    and a stream of new connections asking for the version."""

    def client(number: int) -> Callable[[], None]:
        conn = MemcacheClient(port, timeout=60)
        counter = iter(range(1 << 62))

        def one() -> None:
            i = next(counter)
            key = f"load-{number}-{i % 1000}"
            value = f"{number}:{i}".encode()
            conn.set_many({key: value})
            got = conn.get_many([key])
            if got != {key: value}:
                raise AssertionError(f"get {key}: {got!r}, expected {value!r}")

        return one

    def new_connection() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"version\r\n")
            if not sock.recv(64).startswith(b"VERSION"):
                raise AssertionError("no VERSION answer")

    return Load(client, persistent=persistent, churn=new_connection if churn else None,
                max_seconds=max_seconds)


def http_keep_alive_load(port: int, *, persistent: int = 2,
                         max_seconds: float = 300.0) -> Load:
    """Keep-alive HTTP clients: one connection each, request after request."""

    def client(_number: int) -> Callable[[], None]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

        def one() -> None:
            conn.request("GET", "/")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or b"nonce" not in body:
                raise AssertionError(f"HTTP {response.status}: {body[:100]!r}")
            if response.will_close:
                raise AssertionError("the server closed the keep-alive connection")

        return one

    return Load(client, persistent=persistent, max_seconds=max_seconds)
