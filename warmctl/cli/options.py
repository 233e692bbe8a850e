"""Option definitions shared by several verbs, so that they read and behave the same."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from warmctl.cli import completion

if TYPE_CHECKING:
    from warmctl.app import App
    from warmctl.output import Output

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (stable format).")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the result: no messages, no progress.")
]
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
