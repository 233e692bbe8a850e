"""Option definitions shared by several verbs, so that they read and behave the same."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from warmctl.cli import completion

if TYPE_CHECKING:
    from warmctl.app import App
    from warmctl.oci.sharing import RegistryOptions
    from warmctl.output import Output

def flag(*names: str, help: str, **settings: Any) -> Any:
    """A boolean option. The empty metavar keeps typer from showing `<bool>` after it in
    help, which reads as if the flag took a value."""
    return typer.Option(*names, help=help, metavar="", **settings)


JsonOption = Annotated[
    bool, flag("--json", help="Print the result as JSON on stdout (stable format).")
]
QuietOption = Annotated[
    bool, flag("--quiet", "-q", help="Print only the result: no messages, no progress.")
]


# Snapshot options, shared by `snapshot` and `warm` (which shows them under its own panel).
def leave_running_option(panel: str | None = None) -> Any:
    return flag("--leave-running", "-R", rich_help_panel=panel,
                help="Keep the container running after the snapshot.")


def label_option(panel: str | None = None) -> Any:
    return typer.Option("--label", "-l", metavar="KEY=VALUE", rich_help_panel=panel,
                        help="Attach a label to the snapshot (repeatable).")


def compress_option(panel: str | None = None) -> Any:
    return typer.Option("--compress", "-c", metavar="zstd|none|gzip", rich_help_panel=panel,
                        help="Archive compression.",
                        autocompletion=completion.complete_compressions)


def resume_tcp_option() -> Any:
    return flag("--tcp-established",
                help="Keep the snapshot's established TCP connections (for the very container "
                     "at its own address). Default: they are restored closed, as after a "
                     "network blip, so that any number of copies can run.")


def snapshot_tcp_option(panel: str | None = None) -> Any:
    """Snapshots checkpoint a serving container's connections by default; the strict
    opposite refuses a container that has any."""
    return flag("--tcp-established/--no-tcp-established", rich_help_panel=panel,
                help="Checkpoint established TCP connections, skipping those not yet "
                     "accepted (default). --no-tcp-established refuses (exit 7) a container "
                     "that has any.")


def file_locks_option(panel: str | None = None, *, verb: str = "Checkpoint") -> Any:
    return flag("--file-locks", rich_help_panel=panel, help=f"{verb} file locks.")


def time_limit_option(panel: str | None = None, *, what: str = "checkpoint") -> Any:
    # A checkpoint may first wait for another snapshot of the container (container_lock.py).
    also = (", counting any wait for another snapshot of the container"
            if what == "checkpoint" else "")
    return typer.Option(
        "--time-limit", metavar="DURATION", rich_help_panel=panel, show_default=False,
        help=f"Stop waiting for podman's {what} after DURATION{also} (exit 124); podman goes "
             "on alone and the message says where the container stands. Default: no limit.")


def parse_time_limit(value: str | None) -> float | None:
    from warmctl.errors import UsageError
    from warmctl.units import parse_duration

    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise UsageError(f"--time-limit {value}: must be more than zero")
    return seconds


def parse_max_age(value: str | None) -> float | None:
    """resume --max-age: seconds, more than zero (zero would refuse every snapshot)."""
    from warmctl.errors import UsageError
    from warmctl.units import parse_duration

    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise UsageError(f"--max-age {value}: must be more than zero")
    return seconds


RefArgument = Annotated[
    str,
    typer.Argument(
        metavar="REF",
        help="A snapshot: NAME (its newest generation) or NAME@GENERATION.",
        autocompletion=completion.complete_refs,
    ),
]
RefsArgument = Annotated[
    list[str],
    typer.Argument(
        metavar="REF...",
        help="Snapshots: NAME (its newest generation) or NAME@GENERATION.",
        autocompletion=completion.complete_refs,
    ),
]
OptionalRefsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[REF]...",
        help="Snapshots: NAME (its newest generation) or NAME@GENERATION.",
        autocompletion=completion.complete_refs,
        show_default=False,
    ),
]


def app_of(ctx: typer.Context) -> App:
    """The application object the main callback built."""
    app: App = ctx.find_root().obj
    return app


def output_for(json_mode: bool, quiet: bool) -> Output:
    from warmctl.output import Output

    return Output(json_mode=json_mode, quiet=quiet)


# Registry options, shared by `push` and `pull`, spelled as podman spells them.
_TRUTH = {"true": True, "t": True, "1": True, "yes": True, "false": False, "f": False,
          "0": False, "no": False}


def parse_tls_verify(value: str) -> bool:
    """``--tls-verify=false``: podman's spelling (a value, not a --no- flag)."""
    try:
        return _TRUTH[value.strip().lower()]
    except KeyError:
        raise typer.BadParameter(f"{value!r} is not true or false") from None


def registry_options(tls_verify: str, authfile: str | None,
                     cert_dir: str | None = None) -> RegistryOptions:
    """What push and pull share: --tls-verify, --authfile and --cert-dir, checked."""
    from warmctl.oci.sharing import RegistryOptions

    return RegistryOptions(tls_verify=parse_tls_verify(tls_verify),
                           authfile=Path(authfile) if authfile else None,
                           cert_dir=Path(cert_dir) if cert_dir else None)


def complete_booleans(incomplete: str) -> list[str]:
    return [word for word in ("true", "false") if word.startswith(incomplete)]


TlsVerifyOption = Annotated[
    str,
    typer.Option(
        "--tls-verify", metavar="true|false", autocompletion=complete_booleans,
        help="Require HTTPS with a trusted certificate. false: HTTPS without verification, "
             "or plain HTTP when the registry does not speak TLS (a test registry of your own).",
    ),
]
CertDirOption = Annotated[
    str | None,
    typer.Option(
        "--cert-dir", metavar="PATH", show_default=False,
        help="Certificates for the registry (*.crt CAs, *.cert/*.key client pairs), instead "
             "of certs.d/HOST:PORT under ~/.config/containers, /etc/containers, /etc/docker.",
    ),
]
AuthfileOption = Annotated[
    str | None,
    typer.Option(
        "--authfile", metavar="PATH", show_default=False,
        help="Credentials file, as podman login writes it (default: $REGISTRY_AUTH_FILE, "
             "else podman's and docker's usual files).",
    ),
]
