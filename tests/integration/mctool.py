"""Host-side warm-up and readiness commands for memcached, as a sysadmin would write them.

    python3 mctool.py fill PORT COUNT SEED    wait until memcached answers, store COUNT values
    python3 mctool.py ready PORT COUNT        exit 0 when memcached holds at least COUNT items
    python3 mctool.py check PORT COUNT SEED   exit 0 when every value stored by fill is back
"""

from __future__ import annotations

import sys

from mcclient import MemcacheClient, iter_missing_or_different, random_items, wait_for_memcached


def main(argv: list[str]) -> int:
    command, port = argv[0], int(argv[1])
    if command == "fill":
        # warm runs the warm-up as soon as podman has started the container, before memcached
        # may listen: a warm-up script waits for its service, as a sysadmin's would.
        wait_for_memcached(port)
        with MemcacheClient(port) as client:
            client.set_many(random_items(int(argv[2]), 4096, int(argv[3])))
        return 0
    if command == "ready":
        with MemcacheClient(port) as client:
            count = int(client.stats()["curr_items"])
        print(f"{count} items")
        return 0 if count >= int(argv[2]) else 1
    if command == "check":
        items = random_items(int(argv[2]), 4096, int(argv[3]))
        with MemcacheClient(port) as client:
            got = client.get_many(list(items))
        bad = sum(1 for _ in iter_missing_or_different(items, got))
        print(f"{len(items) - bad} of {len(items)} values back, byte for byte")
        return 0 if bad == 0 else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
