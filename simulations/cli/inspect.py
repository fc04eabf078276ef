"""`claimpt summarize | model-info | attention | embed`: look at results, models and patients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from shared_model.data import DataValidationError
from shared_model.model.config import ARCHITECTURE, ClaimTransformerConfig, architecture_options
from shared_model.runtime.options import bad_input_exits_2, options_from

PublicKeyOpt = Annotated[
    Path | None, typer.Option(help="Refuse the checkpoint unless its manifest signature verifies under this key.")
]


@bad_input_exits_2
def summarize(
    metrics: Annotated[list[Path], typer.Argument(help="metrics.json files written by `claimpt finetune`.")],
) -> None:
    """Print fine-tuning results side by side (one row per metrics.json)."""
    import pandas as pd

    rows = []
    for path in metrics:
        record = _metrics_record(path)
        model = (
            record["model"] if record["model"] == "logreg" else ("pretrained" if record["pretrained"] else "scratch")
        )
        scores = {k: round(v, 3) for k, v in record.items() if k.startswith(("auroc", "auprc", "recall@"))}
        rows.append(
            {
                "site": Path(record.get("data", "")).name,
                "task": record["task"],
                "model": model,
                "n": record["train_size"],
                **scores,
            }
        )
    typer.echo(pd.DataFrame(rows).sort_values(["task", "site", "model"]).to_string(index=False))


def _metrics_record(path: Path) -> dict:
    expected = "a metrics.json written by `claimpt finetune`"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataValidationError(path, expected, found="no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataValidationError(path, expected, found=type(exc).__name__) from exc
    missing = [
        k for k in ("model", "pretrained", "task", "train_size") if not isinstance(record, dict) or k not in record
    ]
    if missing:
        raise DataValidationError(path, expected, found=f"no key {missing[0]!r}")
    return record


@options_from(ClaimTransformerConfig, fields=ARCHITECTURE, into="architecture")
def model_info(
    vocab_size: Annotated[int, typer.Option(min=3, help="Embedding rows: codes + padding + UNK (Claim-PT: 49,836).")],
    groups: Annotated[int, typer.Option(min=1, help="Target groups of the NVP/CP heads (Claim-PT: 3,357).")],
    architecture: dict[str, Any] | None = None,
) -> None:
    """Print the layer table and parameter count of the model a config builds."""
    from shared_model.model.transformer import parameter_table

    try:
        config = ClaimTransformerConfig(vocab_size=vocab_size, n_groups=groups, **architecture_options(architecture))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    rows = parameter_table(config)
    typer.echo(f"{'layer':<20}{'type':<20}{'parameters':>14}")
    for name, kind, count in rows:
        typer.echo(f"{name:<20}{kind:<20}{count:>14,}")
    typer.echo(f"{'total':<40}{sum(r[2] for r in rows):>14,}")


@bad_input_exits_2
def attention(
    checkpoint: Annotated[Path, typer.Option(help="A pretrained or fine-tuned (task) checkpoint directory.")],
    data: Annotated[Path, typer.Option(help="The site's MEDS directory (codes.parquet supplies code descriptions).")],
    out: Annotated[
        Path, typer.Option(help="New directory: attention.html, attention-<id>.png, codes-<id>.png, patients.csv.")
    ],
    patient: Annotated[
        list[int] | None,
        typer.Option(help="A (pseudonymous) subject id to explain; repeatable. Default: a random sample."),
    ] = None,
    sample: Annotated[
        int, typer.Option(min=1, help="Without --patient: how many patients to explain, drawn from --split.")
    ] = 20,
    split: Annotated[str, typer.Option(help="Without --patient: train, tuning or held_out.")] = "held_out",
    render: Annotated[
        int,
        typer.Option(min=0, help="Patients that get PNGs and a section in attention.html (all go to patients.csv)."),
    ] = 20,
    group: Annotated[
        str,
        typer.Option(
            help="Pretrained checkpoints: explain this next-visit group's logit, e.g. "
            "ICD10CM/J45 (default: each patient's top group)."
        ),
    ] = "",
    server_public_key: PublicKeyOpt = None,
    seed: Annotated[int, typer.Option(help="Random seed of the patient sample.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Attention playground: per-layer, per-head attention over visits and code attributions."""
    from shared_model.contract.signing import load_verifier
    from shared_model.evaluation.playground import PlaygroundSettings, run_playground

    if split not in ("train", "tuning", "held_out"):
        raise typer.BadParameter(f"--split must be train, tuning or held_out, got {split!r}")
    settings = PlaygroundSettings(tuple(patient or ()), sample, split, render, seed, group)
    verify = load_verifier(server_public_key) if server_public_key else None
    typer.echo(f"wrote {run_playground(checkpoint, data, out, settings, verify, overwrite=force)}")


@bad_input_exits_2
def embed(
    checkpoint: Annotated[Path, typer.Option(help="A pretrained or fine-tuned (task) checkpoint directory.")],
    data: Annotated[list[Path], typer.Option("--data", help="A site's MEDS directory; repeat to compare sites.")],
    out: Annotated[
        Path,
        typer.Option(
            help="New directory: embeddings.parquet (subject_id, site, split, label, e000...) and projection.png."
        ),
    ],
    label: Annotated[
        str | None, typer.Option(help="Colour the second panel by this task's label (e.g. asthma).")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many patients per site (0: all).")] = 0,
    server_public_key: PublicKeyOpt = None,
    seed: Annotated[int, typer.Option(help="Random seed of the --limit sample and the projection.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing --out directory.")] = False,
) -> None:
    """Export patient vectors and plot a 2-D projection (PCA, or UMAP if installed) by site and label."""
    from shared_model.contract.signing import load_verifier
    from shared_model.evaluation.embeddings import EmbedSettings, run_embed

    verify = load_verifier(server_public_key) if server_public_key else None
    path = run_embed(checkpoint, data, out, EmbedSettings(label, limit, seed), verify_signature=verify, overwrite=force)
    typer.echo(f"wrote {path}")
