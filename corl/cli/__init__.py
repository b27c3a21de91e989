"""The ``corl`` command line (typer + rich).

Each command group lives in its own module with a ``register(app)`` function; this module
only assembles them and turns a :class:`corl.errors.CorlError` into one red line and exit 2.
"""

from __future__ import annotations

import errno
import os
import sys

import typer
from rich.console import Console

from corl.errors import CorlError
from corl.files import disk_error, is_environment_error

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


@app.callback()
def _global_options(
    threads: int = typer.Option(
        int(os.environ.get("CORL_THREADS", "1")),
        "--threads",
        min=1,
        help="CPU threads for torch (env CORL_THREADS). Default 1: small RL networks are "
        "dominated by per-op overhead, and extra threads on a shared CPU slow them down.",
    ),
) -> None:
    import torch

    torch.set_num_threads(threads)


def _register_all() -> None:
    from corl.cli import datasets as datasets_cli

    datasets_cli.register(app)
    for name in ("run", "runs", "eval", "export", "sweep"):
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
    except OSError as exc:
        # a directory created or a file written outside corl.files (a library's own write):
        # the machine's problem (full, read-only, permission) is still one line naming the path
        if not is_environment_error(exc):
            raise
        err = disk_error(
            exc.filename or "(unnamed file)",
            exc,
            "cannot write" if exc.errno not in (errno.ENOENT, errno.ENOTDIR) else "cannot open",
        )
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        # typer may vendor click (typer._click), so match by behaviour, not by import
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        raise
