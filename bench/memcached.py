"""The cache's data and a small memcached text-protocol client that can move a gigabyte.

Values are base64 text of seeded random bytes (4,000 bytes each, as in HOST-NOTES): they
compress about as real cached data does, not to nothing as zeros would.
"""

from __future__ import annotations

import base64
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

MIB = 1 << 20
RAW_VALUE_BYTES = 3000  # base64: 4,000 bytes of text
SET_BATCH = 500
GET_BATCH = 200


@dataclass(frozen=True)
class Dataset:
    keys: list[bytes]
    values: list[bytes]

    @classmethod
    def generate(cls, size_mib: int, seed: int) -> Dataset:
        rng = random.Random(seed)
        value_bytes = len(base64.b64encode(bytes(RAW_VALUE_BYTES)))
        count = size_mib * MIB // value_bytes
        keys = [b"bench-%08d" % i for i in range(count)]
        values = [base64.b64encode(rng.randbytes(RAW_VALUE_BYTES)) for _ in range(count)]
        return cls(keys, values)

    @property
    def value_bytes(self) -> int:
        return sum(len(v) for v in self.values)

    def batches(self, size: int) -> list[range]:
        return [range(i, min(i + size, len(self.keys))) for i in range(0, len(self.keys), size)]


class Client:
    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = self.sock.makefile("rb", buffering=MIB)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()
        self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("memcached closed the connection")
        return line[:-2]

    def set_all(self, data: Dataset) -> None:
        """Store every item, pipelined in batches; fails on any reply but STORED."""
        for batch in data.batches(SET_BATCH):
            self.sock.sendall(b"".join(
                b"set %s 0 0 %d\r\n%s\r\n" % (data.keys[i], len(data.values[i]), data.values[i])
                for i in batch
            ))
            for i in batch:
                reply = self._line()
                if reply != b"STORED":
                    raise RuntimeError(f"set {data.keys[i].decode()}: {reply!r}")

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        self.sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        found: dict[bytes, bytes] = {}
        while (line := self._line()) != b"END":
            _, key, _flags, size = line.split()
            found[key] = self.reader.read(int(size) + 2)[:-2]
        return found

    def count_mismatches(self, data: Dataset) -> int:
        """How many items are missing or differ from what was stored."""
        wrong = 0
        for batch in data.batches(GET_BATCH):
            got = self.get_many([data.keys[i] for i in batch])
            wrong += sum(got.get(data.keys[i]) != data.values[i] for i in batch)
        return wrong

    def stats(self) -> dict[str, str]:
        self.sock.sendall(b"stats\r\n")
        result: dict[str, str] = {}
        while (line := self._line()) != b"END":
            _, key, value = line.decode().split(" ", 2)
            result[key] = value
        return result


def poll(attempt: Callable[[], bool], what: str, timeout: float) -> None:
    """Call attempt() until it returns True; connection errors count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if attempt():
                return
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.002)
    raise TimeoutError(f"{what} not within {timeout:.0f}s (last error: {last})")


def wait_until_answers(port: int, timeout: float = 60.0) -> None:
    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(64).startswith(b"VERSION")

    poll(answers, f"memcached on port {port} answering", timeout)


def wait_first_hit(port: int, key: bytes, value: bytes, timeout: float = 120.0) -> None:
    """Until a get of key returns value: the first request the warm cache serves."""
    def hit() -> bool:
        with Client(port, timeout=5) as client:
            return client.get_many([key]).get(key) == value

    poll(hit, f"first cache hit on port {port}", timeout)
