"""The ``corl`` command line (typer + rich).

Each command group lives in its own module with a ``register(app)`` function; this module
only assembles them and turns a :class:`corl.errors.CorlError` into one red line and exit 2.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from corl.errors import CorlError

os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")

app = typer.Typer(
    name="corl",
    help="Offline-first safe RL: datasets, staged cached pipelines, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _register_all() -> None:
    from corl.cli import datasets as datasets_cli

    datasets_cli.register(app)
    for name in ("run", "eval"):
        try:
            module = __import__(f"corl.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"corl.cli.{name}":
                raise
            continue
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point: user errors are one line, exit code 2."""
    try:
        app(standalone_mode=False)
    except CorlError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise
