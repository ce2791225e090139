"""The `wbc` command. This package builds the Typer app; one module per command group holds thin
commands that parse options (their defaults from the config dataclasses), call the library, and render
with wbc.cli.render. Only this package prints."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from wbc.cli.render import console, log_to_console
from wbc.errors import WbcError

app = typer.Typer(help="White blood cell classification from blood-smear images.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Check, explore, split and download image sets.", no_args_is_help=True)
# `wbc --help` in four boxes, in the order a newcomer needs them (a panel shows where its first command registers)
USE, CHECK, MAKE, LAB = "Use a model", "Check a model", "Make or fit a model", "Data and the lab's review"
app.add_typer(data_app, name="data", rich_help_panel=LAB)


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


def _version(value: bool) -> None:
    """What a lab's validation records: wbc's version, each shipped model file's SHA-256, the libraries doing the work."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from wbc._util.io import sha256
    from wbc._version import __version__
    from wbc.models.files import SHIPPED_DETECTOR, SHIPPED_MODEL, asset_path

    print(f"wbc {__version__}")
    for what, name in (("classifier", SHIPPED_MODEL), ("detector", SHIPPED_DETECTOR)):
        path = asset_path(name)
        print(f"{what}: {name} sha256 {sha256(path)}" if path.is_file() else f"{what}: {name} missing from the package")
    libs = []
    for lib in ("torch", "timm", "onnxruntime", "numpy", "opencv-python-headless"):
        try:
            libs.append(f"{lib} {version(lib)}")
        except PackageNotFoundError:
            pass
    print(f"python {sys.version.split()[0]}, " + ", ".join(libs))
    raise typer.Exit()


@app.callback()
def _options(show_version: bool = typer.Option(False, "--version", help="wbc's version, the shipped models' SHA-256 and the libraries", callback=_version, is_eager=True)) -> None:
    """White blood cell classification from blood-smear images."""


def _click_kinds() -> tuple[tuple, tuple]:
    """(usage errors, aborts) as this Typer raises them: its own click (Typer >= 0.29) or the click package."""
    errors, aborts = [getattr(typer, "TyperException", None)], [typer.Abort]
    try:
        import click

        errors.append(click.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(e for e in errors if e), tuple(aborts)


def main() -> None:
    log_to_console()
    usage, aborts = _click_kinds()
    try:
        code = app(standalone_mode=False)  # Typer's own errors come back here, to be said in one line
    except WbcError as e:
        _error(str(e))
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except aborts:
        _error("aborted: a prompt read the end of its input (a script gives the password in $WBC_PASSWORD)", 1)
    except usage as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(2)  # the help is already printed
        _error(usage_error(e), getattr(e, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def usage_error(e: Exception) -> str:
    """A mistyped command line in one line that names the command and where its options are listed (Typer's own
    is a usage line, a hint and a boxed message)."""
    words = e.format_message() if hasattr(e, "format_message") else str(e)
    message = " ".join(words.split()).removesuffix(".")
    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return message
    return f"{ctx.command_path}: {message[:1].lower()}{message[1:]} (see `{ctx.command_path} --help`)"


# the commands register themselves on `app` (and `data_app`) when imported, then take the order a newcomer needs them in
from wbc.cli import count, data, evaluation, predict, review, serve, training  # noqa: E402,F401

ORDER = ("predict", "count", "serve", "evaluate", "evaluate-count", "bench", "train", "adapt", "export", "train-detector", "export-detector")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name or c.callback.__name__))
