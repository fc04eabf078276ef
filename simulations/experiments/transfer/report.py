"""results.md, summary.csv, the PNG plots and a self-contained report.html for one experiment."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from simulations.experiments.common import check_items, check_lines, markdown_table
from simulations.experiments.transfer.grid import MODE_HELP, MODES, TransferConfig, enumerate_runs
from simulations.experiments.transfer.plots import federated_vs_central, learning_curves, size_label, transfer_heatmap
from simulations.experiments.transfer.pretraining import CheckpointCache, pretraining_job
from simulations.experiments.transfer.summary import Cell, cell_table, paired_difference, primary_metric, summarise
from simulations.html_report import embedded_png, html_page

SMALL_COHORT = 300  # "small" cohorts for the checks: the setting Claim-PT's claim is about
CHECK_TASK = "asthma"


def pretraining_curves(config: TransferConfig, sites: list[str], cache: CheckpointCache) -> pd.DataFrame:
    """Held-out NVP Recall@10 per epoch/round of every pretraining the grid used."""
    frames = []
    jobs = {pretraining_job(r, config) for r in enumerate_runs(config, sites)} - {None}
    for job in sorted(jobs, key=lambda j: (j.kind, len(j.sites), j.sites)):
        cache.get(job)  # rebuilt if its directory was removed after the runs that used it
        run_dir = cache.directory(job)
        if job.kind == "federated":
            mode = "federated" if len(job.sites) == len(sites) else "federated-loso"
            rounds = pd.read_csv(run_dir / "rounds.csv")
            curve = pd.DataFrame({"step": rounds["round"], "recall@10": rounds["eval_recall@10"]})
        else:
            mode = "central" if len(job.sites) == len(sites) and len(sites) > 1 else "local"
            history = pd.read_csv(run_dir / "history.csv")
            if "held_out_recall@10" not in history:
                continue
            curve = pd.DataFrame({"step": history["epoch"] + 1, "recall@10": history["held_out_recall@10"]})
        frames.append(curve.assign(mode=mode, pretraining=f"{mode} ({'+'.join(job.sites)})"))
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["step", "recall@10", "mode", "pretraining"])
    )


def checks(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str]) -> list[tuple[str, bool | None, str]]:
    """The experiment's claims, evaluated on its own numbers (None: the grid cannot tell)."""
    sizes = [s for s in config.cohort_sizes if 0 < s <= SMALL_COHORT]
    if CHECK_TASK not in config.tasks or not sizes:
        return []

    def diffs(mode: str, baseline: str) -> list[tuple[str, float]]:
        found = [
            (f"{site} n={size}", paired_difference(cells, CHECK_TASK, size, site, mode, baseline))
            for size in sizes
            for site in sites
        ]
        return [(where, d[0]) for where, d in found if d is not None]

    results = []
    for mode, baseline, claim, holds in (
        (
            "federated",
            "scratch",
            "federated-pretrained beats scratch by >= 0.05 AUROC in every cell",
            lambda d: d >= 0.05,
        ),
        ("federated-loso", "scratch", "leave-one-site-out federated beats scratch in every cell", lambda d: d > 0),
        ("central", "logreg", "central-pretrained is at least logistic regression in every cell", lambda d: d >= 0),
    ):
        values = diffs(mode, baseline)
        claim += f" ({CHECK_TASK}, every site, n <= {SMALL_COHORT})"
        if not values:
            results.append((claim, None, "not in this grid"))
            continue
        worst = min(values, key=lambda v: v[1])
        results.append((claim, all(holds(d) for _, d in values), f"worst: {worst[1]:+.3f} at {worst[0]}"))
    values = diffs("federated", "central")
    if values:
        mean = float(np.mean([d for _, d in values]))
        results.insert(
            1,
            (
                f"federated is within 0.01 AUROC of central on average over sites and cohorts "
                f"({CHECK_TASK}, n <= {SMALL_COHORT}; single cells are noisier)",
                abs(mean) <= 0.01,
                f"mean {mean:+.3f}; cells " + ", ".join(f"{w} {d:+.3f}" for w, d in values),
            ),
        )
    return results


def _fmt(mean: float, lo: float, hi: float) -> str:
    return "n/a" if not np.isfinite(mean) else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def mode_tables(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows (site, cohort size), columns modes, cells 'mean [95% CI]' of the primary metric."""
    rows = table[(table["task"] == task) & (table["metric"] == primary_metric(task)) & (table["mode"] != "other-site")]
    modes = [m for m in MODES if m in set(rows["mode"])]
    out = []
    for (site, size), group in rows.groupby(["finetune_site", "cohort_size"], sort=True):
        by_mode = group.set_index("mode")
        out.append(
            {
                "site": site,
                "n": size_label(size),
                **{m: _fmt(*by_mode.loc[m, ["mean", "lo", "hi"]]) if m in by_mode.index else "" for m in modes},
            }
        )
    return pd.DataFrame(out)


def difference_table(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str], task: str) -> pd.DataFrame:
    pairs = [
        ("federated", "scratch"),
        ("federated", "central"),
        ("federated-loso", "scratch"),
        ("central", "scratch"),
        ("local", "scratch"),
        ("federated", "logreg"),
        ("federated", "gbm"),
    ]
    out = []
    for size in config.cohort_sizes:
        for site in sites:
            row = {"site": site, "n": size_label(size)}
            for mode, baseline in pairs:
                found = paired_difference(cells, task, size, site, mode, baseline)
                if found is not None:
                    row[f"{mode} - {baseline}"] = f"{found[0]:+.3f} [{found[1]:+.3f}, {found[2]:+.3f}]"
            out.append(row)
    return pd.DataFrame(out)


def reading(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str], curves: pd.DataFrame) -> list[str]:
    """A few sentences a reader can check against the tables."""
    lines = []
    for task in config.tasks:
        metric = primary_metric(task).upper().replace("RECALL@", "Recall@")
        for mode, baseline in (
            ("federated", "scratch"),
            ("federated", "central"),
            ("federated-loso", "scratch"),
            ("federated", "logreg"),
            ("federated", "gbm"),
        ):
            found = [
                (size, site, paired_difference(cells, task, size, site, mode, baseline))
                for size in config.cohort_sizes
                for site in sites
            ]
            found = [(size, site, d) for size, site, d in found if d is not None]
            if not found:
                continue
            small = [d[0] for size, _, d in found if 0 < size <= SMALL_COHORT]
            deltas = [d[0] for _, _, d in found]
            clear = sum(d[1] > 0 for _, _, d in found)
            lines.append(
                f"{task}: {mode} minus {baseline} {metric} averages {np.mean(deltas):+.3f} over all sites and cohort "
                f"sizes (range {min(deltas):+.3f} to {max(deltas):+.3f})"
                + (f", {np.mean(small):+.3f} at cohorts of {SMALL_COHORT} or fewer" if small else "")
                + f"; the 95% interval excludes zero in favour of {mode} in {clear} of {len(found)} cells."
            )
    if len(curves):
        final = curves.sort_values("step").groupby("pretraining").last()
        central = final[final["mode"] == "central"]["recall@10"]
        federated = final[final["mode"] == "federated"]["recall@10"]
        if len(central) and len(federated):
            lines.append(
                f"Pretraining: after the last round, federated NVP Recall@10 is {federated.iloc[0]:.3f} vs "
                f"{central.iloc[0]:.3f} after the same number of central epochs "
                f"({federated.iloc[0] / central.iloc[0]:.1%} of central)."
            )
    return lines


def write_outputs(out: Path, config: TransferConfig, sites: list[str], cache: CheckpointCache) -> Path:
    cells = summarise(out, config.bootstrap)
    table = cell_table(cells)
    table.to_csv(out / "summary.csv", index=False, float_format="%.6f")
    curves = pretraining_curves(config, sites, cache)
    plots = [learning_curves(table, task, out / f"learning_curve_{task}.png") for task in config.tasks]
    if config.heatmap and "local" in config.modes:
        plots.append(transfer_heatmap(table, config.heatmap_task, config.heatmap_size, out / "transfer_heatmap.png"))
    if len(curves):
        plots.append(federated_vs_central(curves, out / "federated_vs_central.png"))
    claims = checks(cells, config, sites)
    text = reading(cells, config, sites, curves)
    write_markdown(out / "results.md", config, sites, table, cells, claims, text)
    return write_html(out / "report.html", config, sites, table, cells, claims, text, plots)


def _intro(config: TransferConfig, sites: list[str]) -> str:
    return (
        f"Sites: {', '.join(sites)}. Tasks: {', '.join(config.tasks)}. Cohort sizes: "
        f"{', '.join(size_label(s) for s in config.cohort_sizes)}. Seeds: {', '.join(map(str, config.seeds))}. "
        f"Pretraining: {config.pretrain_epochs} passes over the data ({config.strategy} rounds of one local "
        f"epoch when federated), k-anonymity {config.k_anonymity}. Cells are means over seeds with 95% "
        f"bootstrap intervals over the site's held-out patients ({config.bootstrap} resamples, paired across "
        "modes)."
    )


def write_markdown(
    path: Path,
    config: TransferConfig,
    sites: list[str],
    table: pd.DataFrame,
    cells: dict[tuple, Cell],
    claims: list,
    text: list[str],
) -> None:
    lines = ["# Cross-institution transfer experiment", "", _intro(config, sites), "", "## Checks", ""]
    lines += check_lines(claims) or ["- (the grid has no asthma cohorts of 300 or fewer)"]
    lines += ["", "## Reading", "", *[f"- {t}" for t in text]]
    for task in config.tasks:
        lines += [
            "",
            f"## {task}: held-out {primary_metric(task)} by pretraining mode",
            "",
            markdown_table(mode_tables(table, task)),
            "",
            f"### {task}: paired differences (95% CI)",
            "",
            markdown_table(difference_table(cells, config, sites, task)),
        ]
    lines += ["", "## Modes", "", *[f"- `{m}`: {MODE_HELP[m]}" for m in (*config.modes, "other-site")]]
    path.write_text("\n".join(lines) + "\n")


def write_html(
    path: Path,
    config: TransferConfig,
    sites: list[str],
    table: pd.DataFrame,
    cells: dict[tuple, Cell],
    claims: list,
    text: list[str],
    plots: list[Path],
) -> Path:
    parts = [f"<p>{html.escape(_intro(config, sites))}</p>", "<h2>Checks</h2><ul>", *check_items(claims)]
    parts += ["</ul><h2>Reading</h2><ul>", *[f"<li>{html.escape(t)}</li>" for t in text], "</ul>"]
    for task in config.tasks:
        parts += [
            f"<h2>{html.escape(task)}</h2>",
            embedded_png(path.parent / f"learning_curve_{task}.png"),
            f"<h3>Held-out {html.escape(primary_metric(task))} by pretraining mode (mean [95% CI])</h3>",
            mode_tables(table, task).to_html(index=False, classes="results", border=0),
            "<h3>Paired differences (95% CI)</h3>",
            difference_table(cells, config, sites, task).to_html(index=False, classes="differences", border=0),
        ]
    for plot in plots:
        if not plot.name.startswith("learning_curve_"):
            parts.append(embedded_png(plot))
    parts += [
        "<h2>Modes</h2><ul>",
        *[f"<li><code>{m}</code>: {html.escape(MODE_HELP[m])}</li>" for m in (*config.modes, "other-site")],
        "</ul><h2>Configuration</h2>",
        f"<pre>{html.escape(json.dumps(config.to_dict(), indent=2))}</pre>",
    ]
    path.write_text(html_page("Cross-institution transfer experiment", parts))
    return path
