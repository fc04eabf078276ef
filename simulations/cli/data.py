"""`claimpt synth | validate | convert`: make, check and convert MEDS datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from shared_model.data import read_meds, summarize
from shared_model.runtime.options import bad_input_exits_2

if TYPE_CHECKING:
    from simulations.synth import ConsortiumShift


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


@bad_input_exits_2
def synth(
    out: Annotated[Path, typer.Option(help="Directory to create; receives site-1 ... site-N.")],
    sites: Annotated[int, typer.Option(min=1, max=50, help="Number of institutions.")] = 3,
    patients: Annotated[
        str,
        typer.Option(
            help="Patients per site: one number for all sites, or one per site "
            "separated by commas (e.g. 20000,5000,2000)."
        ),
    ] = "5000",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same data.")] = 0,
    style: Annotated[
        str,
        typer.Option(
            help="claims: MEDS roots with ICD-10-CM/CPT/RxNorm codes and metadata; foreign: the same patients "
            "in another vocabulary (no ICD10CM/ prefix, admission and lab events) as bare data folders."
        ),
    ] = "claims",
    shift: Annotated[
        str,
        typer.Option(
            help="A consortium drifting from the archetype sites: one factor for every axis (e.g. 1.5) or "
            "axis=factor pairs (size, age_mix, care_setting, coding_dialect, prevalence; e.g. "
            "coding_dialect=2,size=1). 1 is the drift of sites beyond the third; empty: the archetypes."
        ),
    ] = "",
    force: Annotated[bool, typer.Option(help="Replace existing site directories.")] = False,
) -> None:
    """Generate synthetic multi-institution pediatric claims, one MEDS directory per site."""
    from simulations.synth import synthesize
    from simulations.synth.foreign import synthesize_foreign

    if style not in ("claims", "foreign"):
        raise typer.BadParameter(f"--style must be one of claims, foreign, got {style!r}")
    sizes = parse_sizes(patients, sites)
    if style == "foreign":
        if shift:
            raise typer.BadParameter("--shift applies to --style claims only")
        paths = synthesize_foreign(out, sizes, seed, overwrite=force)
    else:
        paths = synthesize(out, sizes, seed, overwrite=force, shift=parse_shift(shift))
    for path in paths:
        typer.echo(f"wrote {path}")


def parse_shift(text: str) -> ConsortiumShift | None:
    """`--shift`: empty (None), one factor for every axis, or axis=factor pairs."""
    from simulations.synth import ConsortiumShift

    if not text.strip():
        return None
    axes = [f.name for f in dataclasses.fields(ConsortiumShift)]
    try:
        if "=" not in text:
            return ConsortiumShift(**dict.fromkeys(axes, float(text)))
        pairs = dict(item.split("=", 1) for item in text.split(","))
        unknown = sorted(set(pairs) - set(axes))
        if unknown:
            raise typer.BadParameter(f"--shift: unknown axis {', '.join(unknown)} (axes: {', '.join(axes)})")
        return ConsortiumShift(**{axis: float(value) for axis, value in pairs.items()})
    except ValueError as exc:
        raise typer.BadParameter(f"--shift {text!r}: {exc}") from exc


@bad_input_exits_2
def validate(
    datasets: Annotated[list[Path], typer.Argument(help="MEDS dataset directories to check.")],
) -> None:
    """Validate MEDS directories and print a summary of each (exit 2 on the first bad input)."""
    for path in datasets:
        typer.echo(summarize(read_meds(path)).to_text())
        typer.echo("")


@bad_input_exits_2
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


@bad_input_exits_2
def split(
    data: Annotated[Path, typer.Option(help="The MEDS dataset to split (its root or its data/ folder).")],
    out: Annotated[Path, typer.Option(help="Directory to create; receives site-1 ... site-N.")],
    sites: Annotated[int, typer.Option(min=1, max=50, help="Number of simulated sites.")] = 3,
    skew: Annotated[
        float,
        typer.Option(
            help="Share of each event-volume band kept at its own site (1/sites: no shift; 1: one band per site)."
        ),
    ] = 0.6,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the assignment.")] = 0,
) -> None:
    """Split one MEDS dataset into simulated sites by subject (splits and labels kept), the sites
    differing in how much care their patients use."""
    from shared_model.data.site_split import split_into_sites

    for path in split_into_sites(data, out, sites, skew, seed):
        typer.echo(summarize(read_meds(path)).to_text())
        typer.echo("")
