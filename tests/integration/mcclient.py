"""A small memcached text-protocol client for the tests: enough to fill a cache with known
random values and read every one back, byte for byte."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator


class MemcacheClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MemcacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _readline(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _readexact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def set_many(self, items: dict[str, bytes], batch: int = 500) -> None:
        keys = list(items)
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            payload = b"".join(
                b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(items[k]), items[k]) for k in chunk
            )
            self.sock.sendall(payload)
            for key in chunk:
                reply = self._readline()
                if reply != b"STORED":
                    raise AssertionError(f"set {key}: {reply!r}")

    def get_many(self, keys: list[str], batch: int = 200) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            self.sock.sendall(b"get " + b" ".join(k.encode() for k in chunk) + b"\r\n")
            while True:
                line = self._readline()
                if line == b"END":
                    break
                _, key, _flags, size = line.split()
                found[key.decode()] = self._readexact(int(size) + 2)[:-2]
        return found

    def stats(self) -> dict[str, str]:
        self.sock.sendall(b"stats\r\n")
        result: dict[str, str] = {}
        while (line := self._readline()) != b"END":
            _, key, value = line.decode().split(" ", 2)
            result[key] = value
        return result


def random_items(count: int, size: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"key-{i:07d}": rng.randbytes(size) for i in range(count)}


def wait_for_memcached(port: int, timeout: float = 30.0) -> None:
    """Poll until memcached answers 'version' (a readiness check, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"version\r\n")
                if sock.recv(64).startswith(b"VERSION"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"memcached on port {port} did not answer within {timeout}s: {last}")


def iter_missing_or_different(expected: dict[str, bytes], got: dict[str, bytes]) -> Iterator[str]:
    for key, value in expected.items():
        if got.get(key) != value:
            yield key
