"""What the host must have before a container is touched: root, a CRIU that works on this
kernel, a runtime that can checkpoint (exit 6 otherwise, with the fix as the hint).
"""

from __future__ import annotations

from warmctl.errors import HostError
from warmctl.host import facts as host
from warmctl.podman.types import HostVersions


def require_usable_criu() -> str:
    """Fail with exit 6 before any container is touched when the CRIU that runc will run is
    missing or, by ``host.CRIU_KERNEL_PAIRS``, too old for this kernel: podman would freeze
    the container and fail halfway. Costs one ``criu --version``. Returns CRIU's version.
    Not root: exit 6 before that (host.require_root)."""
    host.require_root()
    kernel = host.kernel_release()
    path = host.criu_path()
    if path is None:
        raise HostError("CRIU is not installed (no criu on PATH): podman cannot checkpoint "
                        "or restore", hint=host.missing_criu_fix(kernel))
    version = host.criu_version()
    if not version:
        raise HostError(f"{path} --version failed: CRIU is unusable",
                        hint=host.missing_criu_fix(kernel))
    advice = host.criu_kernel_advice(version, kernel)
    if advice is not None:
        raise HostError(advice.problem, hint=advice.fix)
    return version


def require_runtime_can_checkpoint(versions: HostVersions) -> None:
    """Fail with exit 6, before the container is touched, when podman's runtime is known not
    to checkpoint here (host.runtime_problem)."""
    problem = host.runtime_problem(versions.runtime, versions.runtime_details)
    if problem is not None:
        raise HostError(problem.problem, hint=problem.fix)
