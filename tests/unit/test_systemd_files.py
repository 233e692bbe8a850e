"""The systemd units' bounds (issue 21): every service unit has a start and a stop timeout, and
a timeout's signal never reaches podman, runc or CRIU mid-checkpoint (warmctl-systemd(7))."""

from __future__ import annotations

from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
SERVICES = sorted(SYSTEMD.glob("*.service.in"))


def settings(unit: Path) -> dict[str, str]:
    """The unit's Key=Value lines (the last wins, as in systemd), comments left out."""
    found: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            found[key.strip()] = value.strip()
    return found


def test_there_are_service_units() -> None:
    assert [unit.name for unit in SERVICES] == ["warmctl-snapshot@.service.in",
                                               "warmctl@.service.in"]


@pytest.mark.parametrize("unit", SERVICES, ids=lambda unit: unit.name)
def test_every_service_unit_is_bounded_and_signals_only_its_main_process(unit: Path) -> None:
    found = settings(unit)
    for key in ("TimeoutStartSec", "TimeoutStopSec"):
        assert found.get(key, "infinity") not in ("infinity", "0"), f"{unit.name}: no {key}"
    assert found.get("KillMode") == "mixed"


def test_warmctl_service_never_sends_conmon_a_signal_it_passes_into_the_container() -> None:
    found = settings(SYSTEMD / "warmctl@.service.in")
    assert found["KillSignal"] == "SIGUSR1"
    assert "MAX_AGE=15m" in found["Environment"].split()
    script = (SYSTEMD / "warmctl-service").read_text()
    assert "' USR1" in script  # the helper hands the signal on to warmctl as SIGTERM
