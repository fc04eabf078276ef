"""`claimpt bench`: throughput and data figures, written as bench.json and bench.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared_model.runtime.options import bad_input_exits_2


@bad_input_exits_2
def bench(
    out: Annotated[Path, typer.Option(help="Directory for bench.json and bench.md.")],
    patients: Annotated[int, typer.Option(min=10, help="Patients per site for the data benchmarks.")] = 100_000,
    sites: Annotated[int, typer.Option(min=2, help="Number of synthetic sites.")] = 3,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats per timing (median, min, max reported).")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    scale: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also synthesise this many patients, tensorise them into shards "
            "and pretrain one epoch streaming from them (0: skip).",
        ),
    ] = 0,
    model: Annotated[bool, typer.Option(help="Include the paper-sized model throughput figures.")] = True,
    federated: Annotated[
        int, typer.Option(min=0, help="Also time FedAvg rounds over 3 sites of this many patients (0: skip).")
    ] = 0,
    deployment: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also time rounds in a real TLS deployment (SuperLink + 2 SuperNodes on 127.0.0.1) of 2 sites of "
            "this many patients, per-message processes against the site worker (0: skip).",
        ),
    ] = 0,
    original: Annotated[
        Path | None,
        typer.Option(
            help="A checkout of the original Claim-PT (github.com/2g-XzenG/Claim-PT): time its model side by side "
            "with this project's (needs tf-keras: pip install -e '.[original]').",
        ),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="The model figures' precision: float32 is always timed, and bfloat16 beside it when this "
            "resolves to it (auto: where the machine has bfloat16 natively; bfloat16: always, emulated "
            "where it has not).",
        ),
    ] = "auto",
) -> None:
    """Measure throughput and data properties; write bench.json and bench.md."""
    from shared_model.settings import PRECISIONS
    from simulations.bench.run import run_bench

    if precision not in PRECISIONS:
        raise typer.BadParameter(f"one of {', '.join(PRECISIONS)}", param_hint="--precision")

    report = run_bench(
        out,
        patients_per_site=patients,
        sites=sites,
        repeats=repeats,
        seed=seed,
        scale_patients=scale,
        model=model,
        federated_patients=federated,
        deployment_patients=deployment,
        original=original,
        precision=precision,
    )
    typer.echo(report.read_text())
