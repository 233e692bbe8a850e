"""The entry point and the one place where errors become exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.models import TyperPath

from warmctl import __version__
from warmctl.cli import (
    completion_cmd,
    doctor,
    list_cmd,
    prune,
    pull,
    push,
    resume,
    rm,
    show,
    snapshot,
    verify,
    warm,
)
from warmctl.cli.options import flag
from warmctl.errors import (
    ExitCode,
    Interrupted,
    WarmctlError,
    disk_read_error,
    interruption,
    is_disk_failure,
    named_interruption,
    note_termination_signal,
    termination_signal,
)

if TYPE_CHECKING:
    from typer._click.core import Command

app = typer.Typer(
    name="warmctl",
    help="Cache-warm container snapshots: named, catalogued, verified podman checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"warmctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    home: Annotated[
        str | None,
        typer.Option(
            "--home",
            # A path as the shell completes it, kept as typed: an empty value must stay "".
            click_type=TyperPath(),
            metavar="DIR",
            help="Catalogue directory: new, empty, or a catalogue (default: $WARMCTL_HOME, "
                 "else the user data directory).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        flag("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    from warmctl.app import App, default_home

    # An empty value means the default, for --home as for WARMCTL_HOME.
    ctx.obj = App(home=Path(home) if home else default_home())
    ctx.call_on_close(ctx.obj.close)


app.command("warm")(warm.command)
app.command("snapshot")(snapshot.command)
app.command("resume")(resume.command)
app.command("list")(list_cmd.command)
app.command("show")(show.command)
app.command("rm")(rm.command)
app.command("verify")(verify.command)
app.command("prune")(prune.command)
app.command("push")(push.command)
app.command("pull")(pull.command)
app.command("doctor")(doctor.command)
app.command("completion")(completion_cmd.command)


def main(argv: list[str] | None = None) -> int:
    """Run warmctl; returns the exit status. Every error is turned into one line here."""
    _open_closed_standard_streams()
    debug = os.environ.get("WARMCTL_DEBUG") == "1"
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="warmctl: debug: %(message)s")
        _escape_log_records()
    command = typer.main.get_command(app)
    instruction = os.environ.get(completion_cmd.COMPLETE_VAR)
    if instruction:
        # A completion script asking for candidates (<TAB>): answer, run nothing.
        return completion_cmd.answer(command, instruction)
    stdout_before = _stdout_identity()
    note_termination_signal(None)
    previous = _interrupt_on_termination_signals()
    real_stderr = sys.stderr
    sys.stderr = _StderrThatNeverFails(real_stderr)
    try:
        status = _run(command, argv, debug, stdout_before)
    finally:
        sys.stderr = real_stderr
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    received = termination_signal()
    note_termination_signal(None)
    if status == ExitCode.INTERRUPTED and received is not None:
        # Handled as Ctrl-C; the status still names the signal, as a shell's would (128+N).
        return 128 + received
    return status


def _escape_log_records() -> None:
    """Debug lines quote podman's and CRIU's output: escaped as every message is."""
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter or logging.Formatter()
        handler.setFormatter(_EscapingFormatter(formatter))


class _EscapingFormatter(logging.Formatter):
    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        from warmctl.output import terminal_text

        # Line by line: a traceback keeps its lines, and nothing in them moves the cursor.
        return "\n".join(terminal_text(line)
                         for line in self._inner.format(record).split("\n"))


def _interrupt_on_termination_signals() -> dict[int, Any]:
    """SIGTERM and SIGHUP (kill, timeout(1), systemd's stop, a closed terminal) interrupt
    warmctl exactly as Ctrl-C does, so a checkpoint or restore under way is finished or
    rescued, never abandoned by a silent death. A second one, like a second Ctrl-C, leaves."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers (a test calling main() elsewhere)
    return {signum: signal.signal(signum, _raise_interrupt)
            for signum in (signal.SIGTERM, signal.SIGHUP)}


def _raise_interrupt(signum: int, _frame: object) -> None:
    note_termination_signal(signum)
    raise KeyboardInterrupt


class _StderrThatNeverFails:
    """sys.stderr, whose writes cannot fail: a message or the live progress line written to
    a terminal that hung up (SIGHUP: the tty answers EIO), to a full disk or to a pipe whose
    reader left is lost, but must not turn what warmctl did (a snapshot recorded or rescued)
    into a traceback or another exit status."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError:
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _run(command: Command, argv: list[str] | None, debug: bool,
         stdout_before: tuple[int, int, int]) -> int:
    from typer._click import exceptions as click_exceptions

    try:
        result = command.main(args=argv, prog_name="warmctl", standalone_mode=False)
    except SystemExit as exc:
        if exc.code == 1 and stdout_before != _stdout_identity() == _devnull_identity():
            # rich, printing typer's help, met a reader that went away (`--help | head -1`):
            # it put /dev/null on stdout and exits 1. A reader that stops is not a failure.
            return ExitCode.OK
        raise
    except click_exceptions.UsageError as exc:
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx else ""
        _say(f"warmctl: error: {exc.format_message()}{hint}")
        return ExitCode.USAGE
    except click_exceptions.ClickException as exc:
        _say(f"warmctl: error: {exc.format_message()}")
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write(f"warmctl: error: {interruption()}\n")
        return ExitCode.INTERRUPTED
    except WarmctlError as err:
        if debug:
            logging.exception("error")
        from warmctl.output import Output

        if isinstance(err, Interrupted):
            err.message = named_interruption(err.message)
        Output().error(err)
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"warmctl: error: {interruption()}\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError as exc:
        from warmctl.output import discard_stdout, stdout_reader_gone

        if stdout_reader_gone():
            # A reader such as `head` went away while help or a result was printed: not a
            # failure (results printed through Output never get here: their command goes on).
            discard_stdout()
            return ExitCode.OK
        with contextlib.suppress(OSError):  # stderr may be the pipe that broke
            _say(f"warmctl: error: {exc.strerror or exc}")
        return ExitCode.FAILURE
    except OSError as exc:
        if debug:
            raise
        if is_disk_failure(exc):  # its own exit code, and no hint to remove anything
            from warmctl.output import Output

            error = disk_read_error(exc.filename or "a file", exc, doing="read or write")
            Output().error(error)
            return error.exit_code
        where = f": {exc.filename}" if exc.filename else ""
        _say(f"warmctl: error: {exc.strerror or exc}{where}")
        return ExitCode.FAILURE
    except Exception as exc:
        if debug:
            raise
        _say(f"warmctl: internal error: {type(exc).__name__}: {exc} "
             "(rerun with WARMCTL_DEBUG=1 for a traceback)")
        return ExitCode.FAILURE
    if result == ExitCode.INTERRUPTED:
        sys.stderr.write(f"warmctl: error: {interruption()}\n")
    return result if isinstance(result, int) else ExitCode.OK


def _say(line: str) -> None:
    """An error line on stderr, escaped as every message is (output.terminal_text): what
    an exception says can quote a registry, a pulled snapshot, podman or CRIU."""
    from warmctl.output import say

    say(line)


def _stdout_identity() -> tuple[int, int, int]:
    try:
        found = os.fstat(1)
    except OSError:
        return (0, 0, 0)
    return (found.st_dev, found.st_ino, found.st_rdev)


def _devnull_identity() -> tuple[int, int, int]:
    found = os.stat(os.devnull)
    return (found.st_dev, found.st_ino, found.st_rdev)


def _open_closed_standard_streams() -> None:
    """Put /dev/null on a closed stdin, stdout or stderr (``>&-``) before anything opens a
    file: the catalogue's database or an archive would otherwise get descriptor 1 or 2 and
    receive what is printed. A result printed to a closed stdout is lost, said once on stderr;
    the exit status is still that of what was done (a snapshot taken is recorded: exit 0)."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            closed.append(fd)
    if 1 in closed:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if 2 in closed:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if 1 in closed and 2 not in closed:
        sys.stderr.write("warmctl: warning: standard output is closed: results are not printed\n")


def cli() -> NoReturn:
    status = main()
    _flush_or_discard_standard_streams()
    sys.exit(status)


def _flush_or_discard_standard_streams() -> None:
    """Flush stdout and stderr now, while a failure can still be handled. A terminal that
    hung up (SIGHUP) fails every write with EIO; Python would then fail its own flush at exit
    and exit 120, hiding the status of what was done. What cannot be written is dropped."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
