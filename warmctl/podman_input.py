"""What warmctl hands on to podman from the command line, checked as podman checks it, before
anything runs: a malformed value is a usage error (exit 2), not a podman failure found halfway
(`podman container restore --import --name` does not check names at all, and creates a
container under any name it is given).

The rules are podman 4's (``names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*``; ``--publish``'s
``[[ip:][hostPort]:]containerPort[/protocol]`` with ranges), as measured on podman 4.3.1.
"""

from __future__ import annotations

import ipaddress
import re

from warmctl.errors import UsageError

_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# Long enough for any name a person types; podman itself sets no limit.
CONTAINER_NAME_MAX = 253
_PORT_NUMBER = re.compile(r"\+?[0-9]+")  # what Go's strconv.Atoi takes
_PROTOCOLS = ("tcp", "udp", "sctp")
_PUBLISH_FORMAT = "[[IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp|sctp], ports 1-65535 or ranges " \
    "START-END, e.g. 8080:80 or 127.0.0.1:11211:11211"


def is_valid_container_name(name: str) -> bool:
    return _CONTAINER_NAME.fullmatch(name) is not None and len(name) <= CONTAINER_NAME_MAX


def validate_container_name(name: str, *, option: str = "--name") -> str:
    """A container name podman accepts, or UsageError."""
    if not is_valid_container_name(name):
        raise UsageError(
            f"invalid container name {name!r} for {option}: use letters, digits, _ . - "
            f"starting with a letter or digit (at most {CONTAINER_NAME_MAX})"
        )
    return name


def validate_publish(spec: str) -> str:
    """A ``--publish`` value podman accepts, or UsageError saying what is wrong with it."""
    try:
        _check_publish(spec)
    except ValueError as exc:
        raise UsageError(f"invalid --publish {spec!r}: {exc}; use {_PUBLISH_FORMAT}") from None
    return spec


def validate_port(port: int, *, what: str) -> int:
    """A TCP port number 1-65535, or UsageError."""
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid {what} {port}: a port is a number from 1 to 65535")
    return port


def _check_publish(spec: str) -> None:
    body, slash, protocol = spec.rpartition("/") if "/" in spec else (spec, "", "")
    if slash and protocol.lower() not in _PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}" if protocol else "empty protocol")
    host_ip = None
    if body.startswith("["):  # an IPv6 address: [::1]:8080:80
        end = body.find("]")
        if end < 0 or body[end + 1 : end + 2] != ":":
            raise ValueError("an IPv6 address is written [ADDRESS]:HOST_PORT:CONTAINER_PORT")
        host_ip, rest = body[1:end], body[end + 2 :]
        parts = rest.split(":")
        if len(parts) != 2:
            raise ValueError("an address needs a host port (may be empty) and a container port")
        host_port, container_port = parts
    else:
        parts = body.split(":")
        if len(parts) == 1:
            host_port, container_port = "", parts[0]
        elif len(parts) == 2:
            host_port, container_port = parts
        elif len(parts) == 3:
            host_ip, host_port, container_port = parts
        else:
            raise ValueError("too many ':'")
    if host_ip is not None:
        if not host_ip:
            raise ValueError("empty host IP")
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ValueError(f"{host_ip!r} is not an IP address") from None
    if not container_port:
        raise ValueError("no container port")
    container_count = _port_range(container_port, "container port")
    if host_port:
        host_count = _port_range(host_port, "host port")
        if host_count != container_count:
            raise ValueError(f"host and container port ranges differ in length: {host_count} "
                             f"vs {container_count}")


def _port_range(text: str, what: str) -> int:
    """How many ports ``text`` (``PORT`` or ``START-END``) names."""
    start, dash, end = text.partition("-")
    first = _port(start, what)
    if not dash:
        return 1
    last = _port(end, what)
    if last <= first:
        raise ValueError(f"{what} range {text!r} must end above its start")
    return last - first + 1


def _port(text: str, what: str) -> int:
    if not _PORT_NUMBER.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not a number")
    number = int(text)
    if not 1 <= number <= 65535:
        raise ValueError(f"{what} {number} is not from 1 to 65535")
    return number


# podman run options that warm sets itself, or that would undo what it relies on: its own
# name (--container), a detached container that outlives the snapshot, and never --replace,
# which would remove a container warmctl did not create.
_WARM_OWNS = {
    "--name": "give the container's name with --container",
    "--replace": "warm never removes a container it did not create: remove it yourself",
    "--rm": "warm's container must outlive its snapshot",
    "-d": "warm always runs the container detached",
    "--detach": "warm always runs the container detached",
}


def validate_podman_run_arg(arg: str) -> str:
    """An argument of ``warm --podman-arg``: refused (exit 2) when it is an option warm sets
    itself or one that undoes what warm relies on; anything else goes to podman run as is."""
    option = arg.split("=", 1)[0]
    if option in _WARM_OWNS:
        raise UsageError(f"--podman-arg {arg!r} is not allowed: {_WARM_OWNS[option]}")
    return arg
