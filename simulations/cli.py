"""`claimpt`: one command line for data teams, researchers and site operators (DESIGN 1)."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from shared_model.data import DataValidationError, read_meds, summarize

app = typer.Typer(
    name="claimpt",
    help="Federated pretraining and cross-institution transfer for claims/EHR visit transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BAD_INPUT_EXIT = 2


def _bad_input_exits_2(command: Callable[..., Any]) -> Callable[..., Any]:
    """Print data and file errors plainly (no traceback) and exit 2, as DESIGN 2.1 asks."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DataValidationError, FileExistsError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from exc

    return wrapper


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr, force=True)


def parse_sizes(patients: str, sites: int) -> list[int]:
    """`--patients 5000` (every site) or `--patients 20000,5000,2000` (one per site)."""
    try:
        sizes = [int(p) for p in patients.split(",")]
    except ValueError as exc:
        raise typer.BadParameter(f"expected integers separated by commas, got {patients!r}") from exc
    if len(sizes) == 1:
        sizes = sizes * sites
    if len(sizes) != sites:
        raise typer.BadParameter(f"{len(sizes)} sizes given for {sites} sites")
    if min(sizes) < 10:
        raise typer.BadParameter("each site needs at least 10 patients")
    return sizes


@app.command()
@_bad_input_exits_2
def synth(
    out: Annotated[Path, typer.Option(help="Directory to create; receives site-1 ... site-N.")],
    sites: Annotated[int, typer.Option(min=1, max=50, help="Number of institutions.")] = 3,
    patients: Annotated[str, typer.Option(help="Patients per site: one number for all sites, or one per site separated by commas (e.g. 20000,5000,2000).")] = "5000",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same data.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace existing site directories.")] = False,
) -> None:
    """Generate synthetic multi-institution pediatric claims, one MEDS directory per site."""
    from simulations.synth import synthesize

    sizes = parse_sizes(patients, sites)
    for path in synthesize(out, sizes, seed, overwrite=force):
        typer.echo(f"wrote {path}")


@app.command()
@_bad_input_exits_2
def validate(
    datasets: Annotated[list[Path], typer.Argument(help="MEDS dataset directories to check.")],
) -> None:
    """Validate MEDS directories and print a summary of each (exit 2 on the first bad input)."""
    for path in datasets:
        typer.echo(summarize(read_meds(path)).to_text())
        typer.echo("")


@app.command()
@_bad_input_exits_2
def convert(
    claims: Annotated[Path, typer.Option(help="claims.csv: patient_id, service_date, visit_type, code.")],
    patients: Annotated[Path, typer.Option(help="patients.csv: patient_id, birth_date, sex.")],
    out: Annotated[Path, typer.Option(help="MEDS directory to create.")],
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
) -> None:
    """Convert Claim-PT style claims CSV files to MEDS (validated completely before writing)."""
    from shared_model.data.claims_csv import convert_claims

    path = convert_claims(claims, patients, out, overwrite=force)
    typer.echo(summarize(read_meds(path)).to_text())


@app.command()
@_bad_input_exits_2
def bench(
    out: Annotated[Path, typer.Option(help="Directory for bench.json and bench.md.")],
    patients: Annotated[int, typer.Option(help="Patients per site for the data benchmarks.")] = 100_000,
    sites: Annotated[int, typer.Option(min=2, help="Number of synthetic sites.")] = 3,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats per timing (median, min, max reported).")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Measure throughput and data properties; write bench.json and bench.md."""
    from simulations.bench import run_bench

    report = run_bench(out, patients_per_site=patients, sites=sites, repeats=repeats, seed=seed)
    typer.echo(report.read_text())


if __name__ == "__main__":  # pragma: no cover
    app()
