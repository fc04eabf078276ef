"""What privacy and robustness cost: `claimpt experiment privacy`.

1. The privacy-utility curve: federated pretraining with record-level DP-SGD at every site, the
   noise calibrated to spend epsilon in EPSILONS over all rounds (inf: no DP), then NVP Recall@10
   of the final global model (federated evaluation on the sites' held-out patients) and the
   downstream AUROC of a probe fine-tuned on `cohort_size` labelled patients at every site. Each
   point is `repeats` federated runs with their own seeds (initialisation, batches, noise): one
   run's downstream AUROC moves by ~0.03 with its seed alone, as much as the effect measured.
2. The robustness table: aggregation strategy x misbehaving site (one site sends 10x-scaled or
   sign-flipped updates every round), same metrics, on its own set of sites.

Every federated run is written under RUN/pretrained/<name>/ and reused when complete, so an
interrupted experiment resumes; the same seed gives the same tables.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shared_model.checkpoint import assign_weights, load_checkpoint  # noqa: E402
from shared_model.data import DataValidationError, read_meds  # noqa: E402
from shared_model.finetuning import finetune_and_score  # noqa: E402
from shared_model.model import PretrainingModel  # noqa: E402
from shared_model.run_config import FederatedRunConfig  # noqa: E402
from shared_model.tasks import NEXT_VISIT, task_arrays  # noqa: E402
from shared_model.training import FinetuneSettings, evaluate_nvp  # noqa: E402
from simulations.experiments.transfer.pretraining import FederatedRunner, default_federated_runner  # noqa: E402
from simulations.experiments.transfer.report import markdown_table  # noqa: E402
from simulations.experiments.transfer.runner import find_sites  # noqa: E402
from simulations.html_report import embedded_png, html_page  # noqa: E402

log = logging.getLogger(__name__)
EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)
# "+validation": the update-validation wrapper's norm-ratio filter on; every other row runs the bare
# aggregation rule, so the table shows what each rule does on its own
STRATEGIES = ("fedavg", "fedavg+validation", "fedmedian", "fedtrimmedavg", "multikrum")
ADVERSARIES = ("none", "scale=10", "signflip")
# NVP Recall@10 on the held-out patients of the honest sites only (every site but the misbehaving
# one, in clean runs too): a hostile site's own evaluation is no more trustworthy than its updates,
# and robust aggregation is judged by the model the honest sites get (as in the robust-FL literature)
HONEST_RECALL = "honest_recall@10"


@dataclass(frozen=True)
class PrivacyExperimentConfig:
    epsilons: tuple[float, ...] = EPSILONS
    strategies: tuple[str, ...] = STRATEGIES
    adversaries: tuple[str, ...] = ADVERSARIES
    rounds: int = 4  # of the privacy curve
    repeats: int = 3  # federated runs per epsilon of the curve, at seeds seed, seed + 1, ...
    robustness_rounds: int = 8  # of the robustness table: excluding one of five sites costs less as training converges
    clip_norm: float = FederatedRunConfig.dp_clip_norm  # DP-SGD's bounds: the run config's defaults
    embedding_share: float = FederatedRunConfig.dp_embedding_share
    dp_batch_size: int = 0  # expected batch of the private runs (0: the non-private 100); DP favours larger
    # learning rates of the curve's runs, each side's chosen on its held-out pretraining loss (never on the
    # downstream AUROC) over 1e-3 (the framework's default), 2e-3, 4e-3, 8e-3 (and 1.6e-2 under DP),
    # 3 seeds each, epsilon 8, 4 rounds: clipped, noisy training converges slower and wants a faster rate
    learning_rate: float = 2e-3
    dp_learning_rate: float = 8e-3
    dp_rounds: int = 0  # federated rounds of the private runs (0: `rounds`, as the non-private run); DP converges slower
    task: str = "asthma"
    cohort_size: int = 300
    seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0
    k_anonymity: int = 11


@dataclass(frozen=True)
class FederatedRun:
    part: str  # "privacy" or "robustness"
    name: str
    settings: FederatedRunConfig
    epsilon: float = math.inf
    strategy: str = "fedavg"
    adversary: str = "none"
    attack: str = ""  # the simulated adversary (simulations.adversary): SITE:KIND, "" for none


def curve_training(config: PrivacyExperimentConfig) -> tuple[float, dict]:
    """The curve's non-private learning rate and the private runs' training (FederatedRunConfig
    fields), every 0 in `config` resolved to what it stands for."""
    learning_rate = config.learning_rate or FederatedRunConfig.learning_rate
    return learning_rate, {"num_server_rounds": config.dp_rounds or config.rounds,
                           "batch_size": config.dp_batch_size or FederatedRunConfig.batch_size,
                           "learning_rate": config.dp_learning_rate or learning_rate}


def plan_runs(config: PrivacyExperimentConfig, privacy_sites: list[str], robustness_sites: list[str],
              run_root: Path) -> list[FederatedRun]:
    base = FederatedRunConfig(num_server_rounds=config.rounds, seed=config.seed, k_anonymity=config.k_anonymity)
    learning_rate, private = curve_training(config)
    runs = []
    for epsilon in config.epsilons:
        for seed in range(config.seed, config.seed + config.repeats):
            name = f"privacy-eps-{'inf' if math.isinf(epsilon) else f'{epsilon:g}'}-seed-{seed}"
            settings = replace(base, seed=seed, learning_rate=learning_rate, min_available_clients=len(privacy_sites),
                               run_dir=str(run_root / name))
            if not math.isinf(epsilon):  # DP settings on the private runs only: the others stay reusable
                settings = replace(settings, dp_epsilon=epsilon, dp_clip_norm=config.clip_norm,
                                   dp_embedding_share=config.embedding_share, **private)
            runs.append(FederatedRun("privacy", name, settings, epsilon=epsilon))
    attacker = adversary_site(robustness_sites)
    for strategy in config.strategies:
        for adversary in config.adversaries:
            name = f"robustness-{strategy}-{adversary.replace('=', '')}"
            settings = replace(base, min_available_clients=len(robustness_sites), run_dir=str(run_root / name),
                               num_server_rounds=config.robustness_rounds,
                               strategy=strategy.split("+")[0],
                               max_norm_ratio=5.0 if strategy.endswith("+validation") else 0.0)
            runs.append(FederatedRun("robustness", name, settings, strategy=strategy, adversary=adversary,
                                     attack="" if adversary == "none" else f"{attacker}:{adversary}"))
    return runs


def adversary_site(sites: list[str]) -> str:
    """The site that misbehaves in the robustness runs: the second."""
    return sites[1] if len(sites) > 1 else sites[0]


def run_privacy_experiment(data: Path, out: Path, config: PrivacyExperimentConfig = PrivacyExperimentConfig(), *,
                           robustness_data: Path | None = None,
                           federated_runner: FederatedRunner = default_federated_runner) -> Path:
    """Run (or resume) both parts in `out`; returns the path of report.html."""
    out = Path(out)
    privacy_sites = find_sites(data)
    robustness_sites = find_sites(robustness_data) if robustness_data else privacy_sites
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**asdict(config), "epsilons": [str(e) for e in config.epsilons],
                                                 "data": str(data), "robustness_data": str(robustness_data or data)},
                                                indent=2) + "\n")
    runs = plan_runs(config, list(privacy_sites), list(robustness_sites), out / "pretrained")
    attacker = adversary_site(list(robustness_sites))
    honest = {name: path for name, path in robustness_sites.items() if name != attacker}
    rows = []
    for index, run in enumerate(runs, start=1):
        sites = privacy_sites if run.part == "privacy" else robustness_sites
        run_dir = Path(run.settings.run_dir)
        _check_same_settings(run_dir, run.settings, run.attack)
        if not (run_dir / "checkpoint" / "manifest.json").exists():
            log.info("[%d/%d] federated pretraining %s", index, len(runs), run.name)
            resume = (run_dir / "checkpoints").exists()
            federated_runner(list(sites.values()), replace(run.settings, resume=resume), 2, adversary=run.attack)
        rows.append(_score(run, sites, honest, config))
        log.info("[%d/%d] %s: %s", index, len(runs), run.name,
                 {k: round(v, 4) for k, v in rows[-1].items() if isinstance(v, float)})
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False, float_format="%.6f")
    return write_report(out, results, config, list(privacy_sites), list(robustness_sites))


def _check_same_settings(run_dir: Path, settings: FederatedRunConfig, attack: str) -> None:
    """A run directory holds one federated run: refuse to resume or reuse it under other settings."""
    path = run_dir / "settings.json"
    current = _effective({**json.loads(json.dumps(settings.to_run_config())), "adversary": attack})
    if path.exists():
        previous = _effective(json.loads(path.read_text()))
        changed = sorted(k for k in current.keys() | previous.keys() if previous.get(k) != current.get(k))
        if changed:
            raise DataValidationError(path, "the settings this run was started with (use a new --out, or delete it)",
                                      column=", ".join(changed))
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise DataValidationError(run_dir, "a run directory written by this experiment (it has no settings.json)")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=2) + "\n")


def _effective(run_config: dict) -> dict:
    """The settings that shape a run: a switched-off mechanism's parameters do not."""
    ignored = {"run-dir", "resume"}
    if not run_config.get("dp-epsilon"):
        ignored |= {k for k in run_config if k.startswith("dp-")} - {"dp-epsilon"}
    if not run_config.get("client-dp-noise"):
        ignored |= {k for k in run_config if k.startswith("client-dp-")} - {"client-dp-noise"}
    return {k: v for k, v in run_config.items() if k not in ignored}


def _score(run: FederatedRun, sites: dict[str, Path], honest: dict[str, Path], config: PrivacyExperimentConfig) -> dict:
    """The run's metrics, kept in its directory (score.json) for the same downstream settings, so
    a resumed experiment does not fine-tune again (a metric added later is computed alone).
    `honest`: the robustness sites but the misbehaving one (robustness runs only)."""
    cache = Path(run.settings.run_dir) / "score.json"
    key = {"task": config.task, "cohort_size": config.cohort_size, "seeds": list(config.seeds),
           "sites": sorted(sites)}
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    row = {**cached["row"], "part": run.part, "run": run.name} if cached.get("key") == key else _measure(run, sites, config)
    # what the private runs may do differently from the non-private one, shown next to the verdict
    row.update(seed=run.settings.seed, rounds=run.settings.num_server_rounds, learning_rate=run.settings.learning_rate)
    if run.part == "robustness" and HONEST_RECALL not in row:
        row[HONEST_RECALL] = held_out_recall(Path(run.settings.run_dir) / "checkpoint", honest)
    if row != cached.get("row"):
        cache.write_text(json.dumps({"key": key, "row": row}, indent=2) + "\n")
    return row


def held_out_recall(checkpoint_dir: Path, sites: dict[str, Path]) -> float:
    """NVP Recall@10 of a checkpoint over the pooled held-out patients of `sites`, with every code
    of its vocabulary (the federated evaluation differs a little: each site uses only the codes it
    has seen in >= k of its patients)."""
    checkpoint = load_checkpoint(checkpoint_dir)
    model = PretrainingModel(checkpoint.config)
    assign_weights(model, checkpoint)
    held_out = [task_arrays(read_meds(path), NEXT_VISIT, checkpoint.vocabulary)["held_out"] for path in sites.values()]
    return float(evaluate_nvp(model, held_out, ks=(10,))["recall@10"])


def _measure(run: FederatedRun, sites: dict[str, Path], config: PrivacyExperimentConfig) -> dict:
    run_dir = Path(run.settings.run_dir)
    rounds = pd.read_csv(run_dir / "rounds.csv")
    last = rounds.iloc[-1]
    checkpoint = load_checkpoint(run_dir / "checkpoint")
    aurocs = []
    for site_dir in sites.values():
        dataset = read_meds(site_dir)
        for seed in config.seeds:
            outcome = finetune_and_score(dataset, config.task, train_size=config.cohort_size, seed=seed,
                                         checkpoint=checkpoint, settings=FinetuneSettings(seed=seed))
            aurocs.append(outcome.record["auroc"])
    return {"part": run.part, "run": run.name, "epsilon": run.epsilon, "strategy": run.strategy,
            "adversary": run.adversary, "site_epsilon": float(last["site_epsilon"]),
            "nvp_recall@10": float(last["eval_recall@10"]), "auroc": float(np.mean(aurocs)),
            "auroc_sd": float(np.std(aurocs, ddof=1)) if len(aurocs) > 1 else 0.0,
            "dropped_updates": int(rounds["dropped"].sum())}


# --- report ---------------------------------------------------------------------------------------

def checks(results: pd.DataFrame) -> list[tuple[str, bool | None, str]]:
    out: list[tuple[str, bool | None, str]] = []
    curve = results[results["part"] == "privacy"]
    curve = curve.assign(seed=curve["seed"] if "seed" in curve else 0)
    private, plain = curve[curve["epsilon"] == 8.0], curve[np.isinf(curve["epsilon"])]
    if len(private) and len(plain):
        gap = private["auroc"].mean() - plain["auroc"].mean()
        detail = f"{private['auroc'].mean():.3f} vs {plain['auroc'].mean():.3f}, difference {gap:+.3f}"
        paired = (private.set_index("seed")["auroc"] - plain.set_index("seed")["auroc"]).dropna()
        if len(paired) > 1:  # the same seeds on both sides: the spread of their differences
            detail += (f" +- {paired.std(ddof=1) / math.sqrt(len(paired)):.3f} (standard error over {len(paired)} "
                       f"pretraining seeds)")
        for column, what in (("rounds", "rounds"), ("learning_rate", "learning rate")):
            if column in curve and private[column].iloc[0] != plain[column].iloc[0]:  # part of the claim
                detail += f"; private runs at {private[column].iloc[0]:g} {what} against {plain[column].iloc[0]:g}"
        out.append(("epsilon = 8: downstream AUROC within 0.03 of the non-private federated model", gap >= -0.03,
                    detail))
    robust = results[results["part"] == "robustness"]
    metric = _robustness_metric(robust)
    table = robust.set_index(["strategy", "adversary"])[metric]
    for strategy in sorted({s for s, _ in table.index}):
        if (strategy, "none") not in table.index:
            continue
        clean = table[(strategy, "none")]
        for adversary in ("scale=10", "signflip"):
            if (strategy, adversary) in table.index:
                change = table[(strategy, adversary)] / clean - 1
                claim = (f"{strategy} with one site sending {adversary} updates: NVP Recall@10 "
                         + ("degrades visibly (> 2% below clean)" if strategy == "fedavg" else "within 2% of clean"))
                ok = bool(change < -0.02 if strategy == "fedavg" else change >= -0.02)
                where = " on the honest sites" if metric == HONEST_RECALL else ""
                out.append((claim, ok, f"{table[(strategy, adversary)]:.3f} vs {clean:.3f}{where} ({change:+.1%})"))
    return out


def _robustness_metric(robust: pd.DataFrame) -> str:
    """What robustness is judged on: the honest sites' recall when the results have it (results
    written before it existed have only the federated evaluation)."""
    return HONEST_RECALL if HONEST_RECALL in robust else "nvp_recall@10"


def privacy_utility_plot(results: pd.DataFrame, path: Path) -> Path:
    curve = curve_summary(results)
    private = curve[np.isfinite(curve["epsilon"])]
    reference = curve[~np.isfinite(curve["epsilon"])]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for ax, metric, label in ((axes[0], "nvp_recall@10", "NVP Recall@10 (sites' held-out)"),
                              (axes[1], "auroc", "downstream AUROC (mean +- SD over runs)")):
        ax.plot(private["epsilon"], private[metric], marker="o", color="#d62728", label="DP-SGD at every site")
        spread = f"{metric}_runs_sd"
        if spread in private and private[spread].notna().any():
            ax.errorbar(private["epsilon"], private[metric], yerr=private[spread], fmt="none", color="#d62728",
                        alpha=0.4, capsize=3)
        if len(reference):
            level = float(reference[metric].iloc[0])
            ax.axhline(level, color="#1f77b4", linestyle="--", label="no DP")
            if spread in reference and np.isfinite(reference[spread].iloc[0]):  # its runs vary too
                ax.axhspan(level - reference[spread].iloc[0], level + reference[spread].iloc[0], color="#1f77b4",
                           alpha=0.1)
        if len(private):  # a curve of the non-private run alone has no epsilon axis
            ax.set_xscale("log", base=2)
            ax.set_xticks(private["epsilon"].tolist(), [f"{e:g}" for e in private["epsilon"]])
        ax.set_xlabel("epsilon per site (record level, all rounds)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Privacy-utility curve")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def robustness_plot(results: pd.DataFrame, path: Path) -> Path:
    """Change of NVP Recall@10 under attack relative to the same strategy's clean run, with the
    2% band the robust options should stay in."""
    robust = results[results["part"] == "robustness"]
    metric = _robustness_metric(robust)
    table = robust.pivot(index="strategy", columns="adversary", values=metric)
    table = table.reindex([s for s in STRATEGIES if s in table.index] + [s for s in table.index if s not in STRATEGIES])
    attacks = [a for a in table.columns if a != "none"]
    change = table[attacks].div(table["none"], axis=0).sub(1).mul(100) if "none" in table.columns else table[attacks] * 0
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    width = 0.8 / max(len(attacks), 1)
    for rank, attack in enumerate(attacks):
        x = np.arange(len(change)) + (rank - (len(attacks) - 1) / 2) * width
        bars = ax.bar(x, change[attack], width, label=attack, color=["#d62728", "#ff7f0e", "#9467bd"][rank % 3])
        ax.bar_label(bars, fmt="%+.1f", fontsize=7, padding=2)
    ax.axhspan(-2, 2, color="#2ca02c", alpha=0.12, label="within 2% of clean")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(change)), change.index)
    ax.set_ylabel("NVP Recall@10 change vs clean run (%)" + ("\non the honest sites' patients" if metric == HONEST_RECALL else ""))
    ax.set_title("Robustness: one site misbehaving in every round")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curve_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per epsilon: the means over its runs (pretraining seeds) and, with more than one,
    their standard deviations (`*_runs_sd`); auroc_sd is the cohorts' spread within a run."""
    curve = results[results["part"] == "privacy"]
    means = [c for c in ("site_epsilon", "nvp_recall@10", "auroc", "auroc_sd") if c in curve]
    grouped = curve.groupby("epsilon", sort=True)
    summary = grouped[means].mean().join(grouped.size().rename("runs"))
    settings = [c for c in ("rounds", "learning_rate") if c in curve]
    summary = summary.join(grouped[settings].first()) if settings else summary
    if grouped.size().max() > 1:  # a single run has no spread to show
        for metric in ("nvp_recall@10", "auroc"):
            summary[f"{metric}_runs_sd"] = grouped[metric].std(ddof=1)
    columns = ["runs", *settings, "site_epsilon", "nvp_recall@10", "nvp_recall@10_runs_sd", "auroc", "auroc_runs_sd",
               "auroc_sd"]
    return summary[[c for c in columns if c in summary]].reset_index()


def _tables(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    curve = curve_summary(results)
    robust = results[results["part"] == "robustness"]
    robust = robust[list(dict.fromkeys(["strategy", "adversary", "nvp_recall@10", _robustness_metric(robust),
                                        "auroc", "dropped_updates"]))]
    return curve.round(4), robust.round(4)


ROBUSTNESS_NOTE = ("nvp_recall@10: the federated evaluation on every site's held-out patients, the misbehaving site's "
                   "included; honest_recall@10: on the honest sites' held-out patients only, in clean runs too (what "
                   "the checks compare: a hostile site's own evaluation is no more trustworthy than its updates).")


def write_report(out: Path, results: pd.DataFrame, config: PrivacyExperimentConfig, privacy_sites: list[str],
                 robustness_sites: list[str]) -> Path:
    curve, robust = _tables(results)
    claims = checks(results)
    plots = [privacy_utility_plot(results, out / "privacy_utility.png"), robustness_plot(results, out / "robustness.png")]
    learning_rate, private = curve_training(config)
    intro = (f"Privacy curve on {', '.join(privacy_sites)}; robustness on {', '.join(robustness_sites)} (the "
             f"misbehaving site is the second). {config.rounds} federated rounds of one local epoch for the curve "
             f"({private['num_server_rounds']} for its private runs), each point {config.repeats} run(s) at seeds "
             f"{config.seed} to {config.seed + config.repeats - 1}; {config.robustness_rounds} rounds for the table; DP-SGD clip "
             f"norm {config.clip_norm} (embedding share {config.embedding_share:g}), expected batch {private['batch_size']}, learning rate "
             f"{private['learning_rate']:g} (without DP {learning_rate:g}), delta 1/n^1.1 per site; downstream: {config.task}, {config.cohort_size} "
             f"labelled patients per site, probe, fine-tuning seeds {', '.join(map(str, config.seeds))}.")
    lines = ["# Privacy and robustness experiment", "", intro, "", "## Checks", ""]
    lines += [f"- {'PASS' if ok else 'FAIL' if ok is not None else 'n/a'}: {c} ({d})" for c, ok, d in claims]
    lines += ["", "## Privacy-utility curve", "", markdown_table(curve), "",
              "## Robustness (strategy x adversary)", "", ROBUSTNESS_NOTE, "", markdown_table(robust)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    parts = [f"<p>{html.escape(intro)}</p>", "<h2>Checks</h2><ul>"]
    for claim, ok, detail in claims:
        css, word = ("pass", "PASS") if ok else ("fail", "FAIL") if ok is not None else ("", "n/a")
        parts.append(f"<li><b class='{css}'>{word}</b> {html.escape(claim)} ({html.escape(detail)})</li>")
    parts += ["</ul><h2>Privacy-utility curve</h2>", embedded_png(plots[0]),
              curve.to_html(index=False, classes="results", border=0),
              "<h2>Robustness</h2>", f"<p>{html.escape(ROBUSTNESS_NOTE)}</p>", embedded_png(plots[1]), robust.to_html(index=False, classes="results", border=0)]
    path = out / "report.html"
    path.write_text(html_page("Privacy and robustness experiment", parts))
    return path
