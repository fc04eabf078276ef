"""results.md, summary.csv, the PNG plots and a self-contained report.html for one experiment."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared_model.evaluation.html_page import embedded_png, html_page
from shared_model.tensors.tasks import NEXT_VISIT
from simulations.experiments.common import UNDECIDED, Check, check_items, check_lines, markdown_table
from simulations.experiments.transfer.clinical import calibration_table, reliability, site_average, subgroup_table
from simulations.experiments.transfer.grid import MODE_HELP, MODES, TransferConfig, enumerate_runs
from simulations.experiments.transfer.plots import (
    federated_vs_central,
    few_shot_curve,
    labelled_patients_figure,
    learning_curves,
    reliability_plot,
    size_label,
    transfer_heatmap,
)
from simulations.experiments.transfer.pretraining import CheckpointCache, pretraining_job
from simulations.experiments.transfer.summary import (
    BEST_BASELINE,
    Cell,
    Difference,
    cell_table,
    format_cell,
    interval,
    mean_difference,
    paired_difference,
    primary_metric,
    summarise,
)

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


GOAL_MARGIN = 0.02  # issue 21: federated-pretrained >= best baseline + 0.02 AUROC at n <= 300
LABEL_EFFICIENCY = (300, 1000)  # pretrained with 300 labels against scratch with 1,000


def judge_every(found: list[tuple[str, Difference]], threshold: float) -> tuple[bool | str, str]:
    """ "difference >= threshold in every cell": PASS when every cell's 95% interval lies at or above
    it, FAIL when some cell's lies wholly below, otherwise not decided at this scale."""
    lows = [(where, d) for where, d in found if d.interval[0] < threshold]
    failed = [(where, d) for where, d in found if d.interval[1] < threshold]
    worst_where, worst = min(found, key=lambda f: f[1].mean)
    if failed:
        where, d = min(failed, key=lambda f: f[1].mean)
        return False, f"{d} at {where}, wholly below {threshold:+.2f}"
    if lows:
        where, d = min(lows, key=lambda f: f[1].interval[0])
        return UNDECIDED, f"not decided at this scale: {d} at {where} straddles {threshold:+.2f}"
    return True, f"worst {worst} at {worst_where}"


def judge_within(difference: Difference, tolerance: float) -> tuple[bool | str, str]:
    """ "|difference| <= tolerance": PASS when the interval lies inside +-tolerance, FAIL when it lies
    wholly outside, otherwise not decided at this scale."""
    lo, hi = difference.interval
    if -tolerance <= lo and hi <= tolerance:
        return True, f"mean {difference}"
    if lo > tolerance or hi < -tolerance:
        return False, f"mean {difference}, outside +-{tolerance}"
    return UNDECIDED, f"not decided at this scale: mean {difference} reaches beyond +-{tolerance}"


def checks(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str]) -> list[Check]:
    """The experiment's claims, each judged on its paired 95% intervals (see judge_every)."""
    sizes = [s for s in config.cohort_sizes if 0 < s <= SMALL_COHORT]
    if CHECK_TASK not in config.tasks or not sizes:
        return []
    scope = f"({CHECK_TASK}, every site, n <= {SMALL_COHORT})"

    def cells_of(mode: str, baseline: str, pairs: list[tuple[int, int]]) -> list[tuple[str, Difference]]:
        found = [
            (f"{site} n={size}", paired_difference(cells, CHECK_TASK, size, site, mode, baseline, baseline_size))
            for size, baseline_size in pairs
            for site in sites
        ]
        return [(where, d) for where, d in found if d is not None]

    same_size = [(size, size) for size in sizes]
    results: list[Check] = []
    for mode, baseline, threshold, claim in (
        (
            "federated",
            BEST_BASELINE,
            GOAL_MARGIN,
            f"federated-pretrained beats the best count-feature baseline by >= {GOAL_MARGIN} AUROC {scope}",
        ),
        ("federated", "scratch", 0.05, f"federated-pretrained beats scratch by >= 0.05 AUROC {scope}"),
        ("federated-loso", "scratch", 0.0, f"leave-one-site-out federated beats scratch {scope}"),
    ):
        found = cells_of(mode, baseline, same_size)
        results.append((claim, *judge_every(found, threshold)) if found else (claim, None, "not in this grid"))
    small, large = LABEL_EFFICIENCY
    claim = f"federated-pretrained with {small} labels is at least scratch with {large:,} ({CHECK_TASK}, every site)"
    found = (
        cells_of("federated", "scratch", [(small, large)]) if set(LABEL_EFFICIENCY) <= set(config.cohort_sizes) else []
    )
    results.append((claim, *judge_every(found, 0.0)) if found else (claim, None, "not in this grid"))
    found = cells_of("federated", "central", same_size)
    if found:
        results.insert(
            2,
            (
                f"federated is within 0.01 AUROC of central on average over sites and cohorts {scope}",
                *judge_within(mean_difference([d for _, d in found]), 0.01),
            ),
        )
    return results


def mode_tables(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Rows (site, cohort size), columns modes, cells 'mean [95% CI]' of the primary metric."""
    rows = table[(table["task"] == task) & (table["metric"] == primary_metric(task)) & (table["mode"] != "other-site")]
    modes = [m for m in (*MODES, BEST_BASELINE) if m in set(rows["mode"])]
    out = []
    for (site, size), group in rows.groupby(["finetune_site", "cohort_size"], sort=True):
        by_mode = group.set_index("mode")
        out.append(
            {
                "site": site,
                "n": size_label(size),
                **{m: format_cell(*by_mode.loc[m, ["mean", "lo", "hi"]]) if m in by_mode.index else "" for m in modes},
            }
        )
    return pd.DataFrame(out)


HEADLINE_MODES = ("federated", "central", BEST_BASELINE, "scratch")


def headline_table(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str], task: str) -> pd.DataFrame:
    """The table the claim rests on: federated, central, the best baseline (which one) and scratch
    per site and cohort size, and federated's paired differences from the best baseline and scratch."""
    metric = primary_metric(task)
    out = []
    for size in config.cohort_sizes:
        for site in sites:
            found = {m: c for (t, n, s, m, _), c in cells.items() if (t, n, s) == (task, size, site)}
            if not found:
                continue
            row = {"site": site, "n": size_label(size)}
            if task != NEXT_VISIT:
                row["positives"] = f"{next(iter(found.values())).train_positives:.1f}"
            for mode in HEADLINE_MODES:
                if mode in found:
                    row[mode] = format_cell(found[mode].mean[metric], *interval(found[mode].draws[metric]))
                    if found[mode].source:
                        row[mode] += f" ({found[mode].source})"
            for baseline in (BEST_BASELINE, "scratch"):
                difference = paired_difference(cells, task, size, site, "federated", baseline)
                if difference is not None:
                    row[f"federated - {baseline}"] = str(difference)
            out.append(row)
    return pd.DataFrame(out)


def difference_table(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str], task: str) -> pd.DataFrame:
    pairs = [
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
                    row[f"{mode} - {baseline}"] = str(found)
            out.append(row)
    return pd.DataFrame(out)


def reading(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str], curves: pd.DataFrame) -> list[str]:
    """A few sentences a reader can check against the tables."""
    lines = []
    for task in config.tasks:
        metric = primary_metric(task).upper().replace("RECALL@", "Recall@")
        for mode, baseline in (
            ("federated", BEST_BASELINE),
            ("federated", "scratch"),
            ("federated", "central"),
            ("federated-loso", "scratch"),
        ):
            found = [
                (size, site, paired_difference(cells, task, size, site, mode, baseline))
                for size in config.cohort_sizes
                for site in sites
            ]
            found = [(size, site, d) for size, site, d in found if d is not None]
            if not found:
                continue
            small = [d.mean for size, _, d in found if 0 < size <= SMALL_COHORT]
            deltas = [d.mean for _, _, d in found]
            clear = sum(d.interval[0] > 0 for _, _, d in found)
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


TASK_PHRASES = {
    "asthma": "a first asthma diagnosis within the next year",
    "self_harm": "self-harm within the next year",
}
CLINICAL_MODES = ("federated", "central", "gbm", "logreg", "scratch")


def plain_summary(cells: dict[tuple, Cell], config: TransferConfig, sites: list[str], goal: Check | None) -> str:
    """The report's first paragraph, for a reader who is not a modeller."""
    sizes = [s for s in config.cohort_sizes if 0 < s <= SMALL_COHORT]
    if CHECK_TASK not in config.tasks or not sizes:
        return ""
    size = max(sizes)
    frame = site_average(cells, CHECK_TASK, list(HEADLINE_MODES))
    at = frame[frame["cohort_size"] == size].set_index("mode")["mean"]
    if not {"federated", BEST_BASELINE, "scratch"} <= set(at.index):
        return ""
    text = (
        f"In plain words: at {len(sites)} hospitals, a model first trained on every hospital's records "
        f"without the records leaving any hospital (federated pretraining), then adapted with {size} "
        f"patients whose outcome is known, predicted {TASK_PHRASES.get(CHECK_TASK, CHECK_TASK)} with an AUROC "
        f"of {at['federated']:.2f} on average over the hospitals (1 is a perfect ranking of who will and "
        f"will not, 0.5 is chance). The best conventional model trained on the same {size} patients "
        f"(gradient-boosted trees or logistic regression on counts of diagnosis, procedure and drug codes) "
        f"reached {at[BEST_BASELINE]:.2f}, and the same network without pretraining {at['scratch']:.2f}. "
    )
    if goal is None or goal[1] is None:
        return text
    _, verdict, detail = goal
    if verdict is True:
        return (
            text + f"Pretraining is worth it here: it beats the conventional model by at least {GOAL_MARGIN} "
            "at every hospital."
        )
    if verdict is False:
        return text + (
            f"Pretraining does not earn its place on this data: it does not beat the conventional model by the "
            f"{GOAL_MARGIN} AUROC the project aims for ({detail})."
        )
    return text + (
        f"Whether it beats the conventional model by {GOAL_MARGIN} cannot be decided at this scale: the "
        f"uncertainty over the hospitals' test patients is too wide ({detail.split(': ', 1)[-1]})."
    )


@dataclass(frozen=True)
class Report:
    """Everything results.md and report.html show, computed once."""

    config: TransferConfig
    sites: list[str]
    table: pd.DataFrame
    cells: dict[tuple, Cell]
    claims: list[Check]
    reading: list[str]
    summary: str
    lead_figure: Path | None
    plots: list[Path]

    def binary_tasks(self) -> list[str]:
        return [t for t in self.config.tasks if t != NEXT_VISIT]

    def clinical_modes(self) -> list[str]:
        return [m for m in CLINICAL_MODES if m in self.config.modes]

    def clinical_size(self) -> int:
        sizes = [s for s in self.config.cohort_sizes if 0 < s <= SMALL_COHORT] or list(self.config.cohort_sizes)
        return max(sizes)

    def console(self) -> str:
        """What the command prints: the plain summary, the checks and the headline tables."""
        lines = [self.summary, "", "Checks:", *check_lines(self.claims)]
        for task in self.config.tasks:
            lines += ["", f"{task}:", markdown_table(headline_table(self.cells, self.config, self.sites, task))]
        return "\n".join(lines)


def write_outputs(out: Path, config: TransferConfig, sites: list[str], cache: CheckpointCache) -> Report:
    """results.md, summary.csv, the plots and report.html in `out`; returns what they show."""
    cells = summarise(out, config.bootstrap)
    table = cell_table(cells)
    table.to_csv(out / "summary.csv", index=False, float_format="%.6f")
    curves = pretraining_curves(config, sites, cache)
    plots = [learning_curves(table, task, out / f"learning_curve_{task}.png") for task in config.tasks]
    lead = None
    binary = [t for t in config.tasks if t != NEXT_VISIT]
    for task in binary:
        frame = site_average(cells, task, [*MODES, BEST_BASELINE])
        plots.append(few_shot_curve(frame, task, out / f"few_shot_{task}.png"))
        if task == CHECK_TASK:
            lead = labelled_patients_figure(frame, task, out / "labelled_patients.png")
    if config.heatmap and "local" in config.modes:
        plots.append(transfer_heatmap(table, config.heatmap_task, config.heatmap_size, out / "transfer_heatmap.png"))
    if len(curves):
        plots.append(federated_vs_central(curves, out / "federated_vs_central.png"))
    claims = checks(cells, config, sites)
    report = Report(
        config,
        sites,
        table,
        cells,
        claims,
        reading(cells, config, sites, curves),
        plain_summary(cells, config, sites, claims[0] if claims else None),
        lead,
        plots,
    )
    for task in binary:
        frame = reliability(cells, task, report.clinical_size(), report.clinical_modes())
        if len(frame):
            plots.append(reliability_plot(frame, task, report.clinical_size(), out / f"reliability_{task}.png"))
    write_markdown(out / "results.md", report)
    write_html(out / "report.html", report)
    return report


def _intro(config: TransferConfig, sites: list[str]) -> str:
    return (
        f"Sites: {', '.join(sites)}. Tasks: {', '.join(config.tasks)}. Cohort sizes: "
        f"{', '.join(size_label(s) for s in config.cohort_sizes)}. Seeds: {', '.join(map(str, config.seeds))}. "
        f"Pretraining: {config.pretrain_epochs} passes over the data ({config.strategy} rounds of one local "
        f"epoch when federated), k-anonymity {config.k_anonymity}. "
        + (
            f"Out of time: cohorts before {config.test_from}, held-out patients from it on. "
            if config.test_from
            else ""
        )
        + f"Cells are means over seeds with 95% bootstrap intervals over the site's held-out patients "
        f"({config.bootstrap} resamples, paired across modes and cohort sizes). A check is PASS or FAIL only "
        "when its interval is decisive."
    )


def _sections(report: Report) -> list[tuple[str, str, pd.DataFrame]]:
    """(heading level, title, table) of every table, in reading order."""
    config, cells, sites = report.config, report.cells, report.sites
    sections = []
    for task in config.tasks:
        metric = primary_metric(task)
        sections += [
            (
                "2",
                f"{task}: federated, central, best baseline and scratch (held-out {metric}, 95% CI)",
                headline_table(cells, config, sites, task),
            ),
            ("3", f"{task}: every mode", mode_tables(report.table, task)),
            ("3", f"{task}: further paired differences", difference_table(cells, config, sites, task)),
        ]
    size = report.clinical_size()
    for task in report.binary_tasks():
        modes = report.clinical_modes()
        sections += [
            (
                "3",
                f"{task}: calibration, Brier score [95% CI] / expected calibration error (10 bins)",
                calibration_table(cells, task, list(config.cohort_sizes), modes),
            ),
            (
                "3",
                f"{task}: AUROC by subgroup, n = {size_label(size)} (held-out patients of each site)",
                subgroup_table(cells, task, size, modes),
            ),
        ]
    return [(level, title, frame) for level, title, frame in sections if len(frame)]


def write_markdown(path: Path, report: Report) -> None:
    config = report.config
    lines = ["# Cross-institution transfer experiment", ""]
    if report.summary:
        lines += [report.summary, "", "![labelled patients](labelled_patients.png)", ""]
    lines += [_intro(config, report.sites), "", "## Checks", ""]
    lines += check_lines(report.claims) or ["- (the grid has no asthma cohorts of 300 or fewer)"]
    lines += ["", "## Reading", "", *[f"- {t}" for t in report.reading]]
    for level, title, frame in _sections(report):
        lines += ["", f"{'#' * int(level)} {title}", "", markdown_table(frame)]
    lines += ["", "## Modes", "", *[f"- `{m}`: {MODE_HELP[m]}" for m in (*config.modes, "other-site")]]
    lines += [f"- `{BEST_BASELINE}`: the better of logreg and gbm in each cell, by held-out mean (favours them)"]
    path.write_text("\n".join(lines) + "\n")


def write_html(path: Path, report: Report) -> None:
    config = report.config
    parts = []
    if report.summary:
        parts += [f"<p class='lead'>{html.escape(report.summary)}</p>"]
    if report.lead_figure is not None:
        parts.append(embedded_png(report.lead_figure))
    parts += [f"<p>{html.escape(_intro(config, report.sites))}</p>", "<h2>Checks</h2><ul>", *check_items(report.claims)]
    parts += ["</ul><h2>Reading</h2><ul>", *[f"<li>{html.escape(t)}</li>" for t in report.reading], "</ul>"]
    for level, title, frame in _sections(report):
        parts += [f"<h{level}>{html.escape(title)}</h{level}>", frame.to_html(index=False, border=0)]
    parts += ["<h2>Figures</h2>", *[embedded_png(plot) for plot in report.plots]]
    parts += [
        "<h2>Modes</h2><ul>",
        *[f"<li><code>{m}</code>: {html.escape(MODE_HELP[m])}</li>" for m in (*config.modes, "other-site")],
        f"<li><code>{BEST_BASELINE}</code>: the better of logreg and gbm in each cell, by held-out mean</li>",
        "</ul><h2>Configuration</h2>",
        f"<pre>{html.escape(json.dumps(config.to_dict(), indent=2))}</pre>",
    ]
    path.write_text(html_page("Cross-institution transfer experiment", parts))
