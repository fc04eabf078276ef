"""results.md and a self-contained report.html for the privacy experiment."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from shared_model.evaluation.html_page import embedded_png, html_page
from simulations.experiments.common import check_items, check_lines, markdown_table
from simulations.experiments.privacy.plan import PrivacyExperimentConfig, curve_training
from simulations.experiments.privacy.plots import privacy_utility_plot, robustness_plot
from simulations.experiments.privacy.summary import checks, curve_summary, robustness_metric


def _tables(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    curve = curve_summary(results)
    robust = results[results["part"] == "robustness"]
    robust = robust[
        list(
            dict.fromkeys(
                ["strategy", "adversary", "nvp_recall@10", robustness_metric(robust), "auroc", "dropped_updates"]
            )
        )
    ]
    return curve.round(4), robust.round(4)


ROBUSTNESS_NOTE = (
    "nvp_recall@10: the federated evaluation on every site's held-out patients, the misbehaving site's "
    "included; honest_recall@10: on the honest sites' held-out patients only, in clean runs too (what "
    "the checks compare: a hostile site's own evaluation is no more trustworthy than its updates)."
)


def write_report(
    out: Path,
    results: pd.DataFrame,
    config: PrivacyExperimentConfig,
    privacy_sites: list[str],
    robustness_sites: list[str],
) -> Path:
    curve, robust = _tables(results)
    claims = checks(results)
    plots = [
        privacy_utility_plot(results, out / "privacy_utility.png"),
        robustness_plot(results, out / "robustness.png"),
    ]
    learning_rate, private = curve_training(config)
    intro = (
        f"Privacy curve on {', '.join(privacy_sites)}; robustness on {', '.join(robustness_sites)} (the "
        f"misbehaving site is the second). {config.rounds} federated rounds of one local epoch for the curve "
        f"({private['num_server_rounds']} for its private runs), each point {config.repeats} run(s) at seeds "
        f"{config.seed} to {config.seed + config.repeats - 1}; {config.robustness_rounds} rounds for the table; "
        f"DP-SGD clip "
        f"norm {config.clip_norm} (embedding share {config.embedding_share:g}), expected batch "
        f"{private['batch_size']}, learning rate "
        f"{private['learning_rate']:g} (without DP {learning_rate:g}), delta 1/n^1.1 per site; downstream: "
        f"{config.task}, {config.cohort_size} "
        f"labelled patients per site, probe, fine-tuning seeds {', '.join(map(str, config.seeds))}."
    )
    lines = ["# Privacy and robustness experiment", "", intro, "", "## Checks", ""]
    lines += check_lines(claims)
    lines += [
        "",
        "## Privacy-utility curve",
        "",
        markdown_table(curve),
        "",
        "## Robustness (strategy x adversary)",
        "",
        ROBUSTNESS_NOTE,
        "",
        markdown_table(robust),
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    parts = [f"<p>{html.escape(intro)}</p>", "<h2>Checks</h2><ul>", *check_items(claims)]
    parts += [
        "</ul><h2>Privacy-utility curve</h2>",
        embedded_png(plots[0]),
        curve.to_html(index=False, classes="results", border=0),
        "<h2>Robustness</h2>",
        f"<p>{html.escape(ROBUSTNESS_NOTE)}</p>",
        embedded_png(plots[1]),
        robust.to_html(index=False, classes="results", border=0),
    ]
    path = out / "report.html"
    path.write_text(html_page("Privacy and robustness experiment", parts))
    return path
