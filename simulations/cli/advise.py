"""`claimpt advise`: the lab's partner advice (simulations/experiments/advisor/), on site
directories at hand: which partners would help each site, predicted from releasable summaries.
A consortium's coordinator runs the advisory round instead (`advise-only`, server/overview/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared_model.runtime.options import bad_input_exits_2


@bad_input_exits_2
def advise(
    data: Annotated[list[Path], typer.Option("--data", help="A site's MEDS directory (repeat: one per site).")],
    out: Annotated[Path, typer.Option(help="Where advice.json, advice.md, advice.png and summaries/ go.")],
    predictor: Annotated[
        Path | None,
        typer.Option(help="A predictor.json from `make experiment-advisor` (default: the one shipped with claimpt)."),
    ] = None,
    k_anonymity: Annotated[int, typer.Option(min=1, help="Each site's summary leaves out counts below k.")] = 11,
    max_partners: Annotated[
        int, typer.Option(min=1, help="Candidate partner sets: 1..max-partners sites, and all the others.")
    ] = 2,
    margin: Annotated[
        float | None,
        typer.Option(
            help="Recommend partners only when their predicted AUROC gain exceeds this (default: the predictor's)."
        ),
    ] = None,
    own_auroc: Annotated[
        bool,
        typer.Option(
            help="Each site measures the AUROC it reaches alone (the predictor's recipe: minutes per site); "
            "without it the advice cannot tell which sites gain most."
        ),
    ] = True,
) -> None:
    """Predict, for every ordered pair of sites and every candidate partner set, the AUROC a site
    gains by pretraining on the partners, and recommend each site its partners. Each site's input
    is the summary it would release in a federation (summaries/*.json), never rows. A lab tool:
    its advice has not yet beaten joining everyone (docs/results/advisor.md)."""
    from server.overview.predictor import load_predictor
    from shared_model.contract.site_summary import save_summaries, site_summary
    from shared_model.data import read_meds
    from shared_model.training.own_auroc import measure_own_auroc
    from simulations.experiments.advisor.advice import advise as predict_advice
    from simulations.experiments.advisor.report import plot_advice

    names = [path.name for path in data]
    if len(set(names)) != len(names) or len(names) < 2:
        raise typer.BadParameter("--data: give at least two site directories with different names")
    try:
        model = load_predictor(predictor)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"--predictor {predictor}: not a transfer predictor ({exc})") from exc
    recipe = model.own_auroc if own_auroc else None
    summaries = {}
    for path in data:
        dataset = read_meds(path)
        own = {}
        if recipe is not None:
            typer.echo(f"{path.name}: measuring its own AUROC on {model.task} ({len(recipe.seeds)} seeds)", err=True)
            own = {model.task: measure_own_auroc(dataset, model.task, recipe, k_anonymity)}
        summaries[path.name] = site_summary(dataset, k_anonymity, own_auroc=own)
    advice = predict_advice(summaries, model, max_partners=max_partners, margin=margin)
    save_summaries(summaries, out / "summaries")
    advice.write(out)
    plot_advice(advice, out / "advice.png")
    typer.echo(advice.to_markdown())
    typer.echo(f"\npredicted gains for: {model.task or 'no particular task'}")
    typer.echo(f"predictor: {model.fitted_on or predictor}\nwritten: {out / 'advice.json'}, {out / 'advice.png'}")
