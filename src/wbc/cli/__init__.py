"""The `wbc` command. This package builds the Typer app; one module per command group holds thin
commands that parse options (their defaults from the config dataclasses), call the library, and render
with wbc.cli.render. Only this package prints."""

from __future__ import annotations

import sys

import typer

from wbc.cli.render import console, log_to_console
from wbc.errors import WbcError

app = typer.Typer(help="White blood cell classification from blood-smear images.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Check, explore, split and download image sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _data_folder(value: str | None) -> str | None:
    """--data checked as it is parsed, before PyTorch loads (a wrong folder said in a second, not in six)."""
    if value is not None:
        from wbc.data.scan import find_layout

        find_layout(value)
    return value


def _model_file(value: str | None) -> str | None:
    """--model checked as it is parsed, before PyTorch loads."""
    from wbc.models.files import require_model

    require_model(value)
    return value


DataOpt = typer.Option(None, "--data", help="dataset folder (default: $WBC_DATA or ../shared/data/blood-cells)", callback=_data_folder)
ModelOpt = typer.Option(None, "--model", "-m", help="model file (default: the shipped model)", callback=_model_file)


def main() -> None:
    log_to_console()
    try:
        app()
    except WbcError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


# the commands register themselves on `app` (and `data_app`) when imported; the order is `wbc --help`'s
from wbc.cli import count, data, evaluation, predict, review, serve, training  # noqa: E402,F401
