"""``corl export RUN --format torchscript|onnx -o DIR``: a policy as a standalone file + JSON card."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def export_command(
    source: str = typer.Argument(
        ..., help="A run id (corl runs), a run record, a policy artifact directory, or a pipeline name with --task."
    ),
    fmt: str = typer.Option(
        "torchscript",
        "--format",
        "-f",
        help="torchscript (.pt, plain torch.jit.load) or onnx (.onnx, onnxruntime; the onnx extra).",
    ),
    out: str = typer.Option("export", "--out", "-o", help="Directory for the file and its JSON card."),
    task: Optional[str] = typer.Option(
        None, "--task", "-t", help="With a pipeline name: its latest finished run on this task."
    ),
    checkpoint: str = typer.Option("final", "--checkpoint", help="final, or best where the run kept a best iterate."),
    name: Optional[str] = typer.Option(None, "--name", help="File name stem (default <pipeline>-<task>-s<seed>)."),
    checkpoints: Optional[str] = typer.Option(None, "--checkpoints", help="Cache root."),
) -> None:
    """Export a trained policy for deployment: observation normalisation folded in, actions clipped to the box."""
    import corl.api as api

    path, card = api.export_policy(
        source, fmt, out, task=task, checkpoint=checkpoint, checkpoints=checkpoints, name=name
    )
    console.print(escape(f"{fmt}: {path}\ncard: {card}"), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
