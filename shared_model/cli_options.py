"""Pieces of the `claimpt` command line shared by the command groups of `simulations`, `server`
and `client` (which may not import each other): the bad-input rule and the model options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

from shared_model.checkpoint import CheckpointError
from shared_model.data import DataValidationError

BAD_INPUT_EXIT = 2


def model_options(layers: int, heads: int, d_model: int, ffn: int, dropout: float, pre_ln: bool,
                  time_encoding: str) -> dict[str, Any]:
    return {"n_layers": layers, "n_heads": heads, "d_model": d_model, "patient_dim": d_model, "ffn_dim": ffn,
            "dropout": dropout, "pre_layer_norm": pre_ln, "time_encoding": time_encoding}


LayersOpt = Annotated[int, typer.Option("--layers", min=1, help="Transformer layers (Claim-PT: 1).")]
HeadsOpt = Annotated[int, typer.Option("--heads", min=1, help="Attention heads (Claim-PT: 2).")]
DModelOpt = Annotated[int, typer.Option("--d-model", min=2, help="Width of embeddings and patient vector (Claim-PT: 100).")]
FfnOpt = Annotated[int, typer.Option("--ffn", min=1, help="Feed-forward width (Claim-PT: 100).")]
DropoutOpt = Annotated[float, typer.Option("--dropout", min=0.0, max=0.9, help="Dropout rate (Claim-PT: 0).")]
PreLnOpt = Annotated[bool, typer.Option("--pre-ln/--post-ln", help="Pre-LayerNorm blocks (Claim-PT: post-LN).")]
TimeOpt = Annotated[str, typer.Option("--time-encoding", help="day_of_year (Claim-PT) or days_before+age.")]


def bad_input_exits_2(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input: one plain line naming the file (and row and column when known), no traceback,
    exit code 2 (DESIGN 2.1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DataValidationError, CheckpointError, FileExistsError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from exc

    return wrapper
