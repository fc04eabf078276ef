"""`claimpt bench`: runs the sections (data, tensorisation, model, attention, scale, federated
round) and writes their figures as bench.json and a Markdown table, bench.md."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shared_model.data import DataValidationError, read_meds
from simulations.bench.deployment import MODE_LABELS, deployment_section
from simulations.bench.model import (
    MODEL_PATIENTS,
    attention_section,
    bench_precisions,
    check_original_checkout,
    federated_section,
    model_section,
    original_section,
    scale_section,
    tensorize_section,
)
from simulations.bench.timing import Rate, machine_info, measure_rate, peak_rss_mb, versions

log = logging.getLogger(__name__)


def _data_section(work_dir: Path, patients_per_site: int, sites: int, repeats: int, seed: int) -> dict[str, Any]:
    from simulations.bench.heterogeneity import js_divergence_matrix, label_prevalence
    from simulations.bench.signal import logreg_signal
    from simulations.synth import synthesize

    sizes = [patients_per_site] * sites

    def generate() -> int:
        synthesize(work_dir / "sites", sizes, seed, overwrite=True)
        return sum(sizes)

    log.info("bench: synthesising %d sites x %d patients (%d timed repeats)", sites, patients_per_site, repeats)
    synth_rate = measure_rate(generate, repeats, "patients/s")
    datasets = {f"site-{i + 1}": read_meds(work_dir / "sites" / f"site-{i + 1}") for i in range(sites)}
    n_events = sum(len(ds.events) for ds in datasets.values())
    events_per_patient = n_events / sum(sizes)
    signal = {name: asdict(logreg_signal(ds, "asthma", seed)) for name, ds in datasets.items()}
    jsd = js_divergence_matrix(datasets)
    prevalence = label_prevalence(datasets)
    return {
        "synth_patients_per_s": asdict(synth_rate),
        "synth_events_per_s": asdict(
            Rate(
                synth_rate.median * events_per_patient,
                synth_rate.min * events_per_patient,
                synth_rate.max * events_per_patient,
                "events/s",
            )
        ),
        "synth_events": n_events,
        "asthma_logreg_auroc": {k: None if math.isnan(v["auroc"]) else v["auroc"] for k, v in signal.items()},
        "site_js_divergence": jsd.round(4).to_dict(),
        "label_prevalence": prevalence.round(4).to_dict(orient="index"),
    }


def _precision_tables(data: dict[str, Any]) -> list[str]:
    """The model's training and inference in each precision timed (beside the original Claim-PT's
    when it ran), and where each precision's step spends its milliseconds."""
    precisions = data["precisions"]
    original = "original_pretrain_patients_per_s" in data
    lines = ["## The model in each precision", ""]
    if original:
        lines += [
            f"The original Claim-PT (its unchanged cpt.py under tf-keras, compiled as its train.py does; "
            f"{data['original_parameters']:,} parameters), fed the same paper-shaped patients by a numpy batch "
            f"generator, timed in the same run: training {data['original_pretrain_patients_per_s']['median']:,.0f} "
            f"patients/s, inference {data['original_predict_patients_per_s']['median']:,.0f}.",
            "",
        ]
    header = "| precision | training (patients/s) | inference (patients/s) |"
    rule = "|---|---:|---:|"
    if original:  # the original's epochs vary (484-696 patients/s on one machine): its fastest is the fair bar
        header += " training vs original (its median / fastest epoch) | inference vs original (the same) |"
        rule += "---:|---:|"
    lines += [header, rule]
    for precision, figures in precisions.items():
        row = (
            f"| {precision} | {figures['pretrain_patients_per_s']['median']:,.0f} "
            f"| {figures['predict_patients_per_s']['median']:,.0f} |"
        )
        if original:
            row += (
                f" {figures['pretrain_vs_original']:.2f}x / **{figures['pretrain_vs_original_fastest']:.2f}x** "
                f"| {figures['predict_vs_original']:.2f}x / **{figures['predict_vs_original_fastest']:.2f}x** |"
            )
        lines.append(row)
    parts = list(next(iter(precisions.values()))["step_profile_ms"])
    lines += [
        "",
        "Where a training step's milliseconds go (each part timed alone on one batch of 100, forward and "
        "backward, median of 30 calls; simulations.bench.profile):",
        "",
        "| part | " + " | ".join(f"{p} (ms)" for p in precisions) + " |",
        "|---|" + "---:|" * len(precisions),
        *(
            f"| {part} | " + " | ".join(f"{f['step_profile_ms'][part]:.1f}" for f in precisions.values()) + " |"
            for part in parts
        ),
    ]
    return lines


def _header(report: dict[str, Any]) -> list[str]:
    machine = report["machine"]
    lines = [
        "# claimpt bench",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores"
        + (f", GPUs {', '.join(machine['gpus'])}" if machine["gpus"] else ", no GPU")
        + f" (CPU bfloat16 flags: {', '.join(machine['cpu_bfloat16_flags']) or 'none'}; "
        + f"bfloat16 natively: {machine['native_bfloat16']}); "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        "| figure | median | min | max | unit |",
        "|---|---:|---:|---:|---|",
    ]
    for key, value in report["figures"].items():
        if isinstance(value, dict) and {"median", "min", "max"} <= value.keys():
            lines.append(
                f"| `{key}` | {value['median']:,.0f} | {value['min']:,.0f} | {value['max']:,.0f} | {value['unit']} |"
            )
    return [*lines, f"| `peak_rss_mb` | {report['figures']['peak_rss_mb']:,.0f} | | | MB |"]


def _scale(data: dict[str, Any]) -> list[str]:
    if "scale_patients" not in data:
        return []
    return [
        "",
        "## Scale",
        "",
        f"Tensorising {data['scale_patients']:,} patients ({data['scale_tensorize_events']:,} events) "
        f"streaming from MEDS shards: {data['scale_tensorize_seconds']:,} s, peak RSS "
        f"{data['scale_tensorize_peak_rss_mb']:,.0f} MB (child process, generator excluded). Then one "
        f"pretraining epoch (faithful model at the paper's sizes, {data['scale_model_vocab_size']:,} code and "
        f"{data['scale_model_groups']:,} group slots for the data's {data['scale_vocab_size']:,} codes, "
        f"batch 100) over "
        f"{data['scale_epoch_samples']:,} samples streamed from the memory-mapped shards of every split: "
        f"{data['scale_epoch_seconds']:,} s ({data['scale_epoch_samples'] / data['scale_epoch_seconds']:,.0f} "
        f"patients/s), peak RSS {data['scale_epoch_peak_rss_mb']:,.0f} MB.",
    ]


def _federated_round(data: dict[str, Any]) -> list[str]:
    if "federated_round_seconds" not in data:
        return []
    return [
        "",
        "## Federated round (FedAvg, 3 sites, one ClientApp at a time)",
        "",
        f"{data['federated_patients_per_site']:,} patients per site: round {data['federated_round_seconds']:.1f} s "
        f"(median of rounds 2+), slowest local training {data['federated_slowest_train_seconds']:.1f} s, "
        f"all local training + evaluation {data['federated_client_compute_seconds']:.1f} s; "
        f"`federated_round_overhead_fraction` = {data['federated_round_overhead_fraction']:.1%} "
        "(round time spent in neither local training nor local evaluation).",
    ]


def _deployment_rounds(data: dict[str, Any]) -> list[str]:
    if "deployment_rounds" not in data:
        return []
    rows = []
    for mode, label in MODE_LABELS.items():
        if f"deployment_{mode}_round_seconds" in data:
            round_s, local_s, share, server_s = (
                data[f"deployment_{mode}_{k}"]
                for k in ("round_seconds", "local_seconds", "overhead_fraction", "server_seconds")
            )
            figures = f"{round_s:.1f} | {local_s:.1f} | {round_s - local_s:.1f} | {server_s:.1f} | {share:.1%}"
            rows.append(f"| {label} | {figures} |")
    return [
        "",
        "## Rounds in a real deployment (TLS SuperLink + 2 SuperNodes on this machine)",
        "",
        f"2 sites of {data['deployment_patients_per_site']:,} patients, FedAvg, default model, median of rounds "
        f"2-{data['deployment_rounds'] - 1} (the last also evaluates its model alone). Overhead: the share of "
        "the round spent in neither local training nor local evaluation at the slowest site. Of what is "
        "outside, the server's turn is the ServerApp's own work (aggregation, checks, the signed checkpoint, "
        "the next messages); the rest is on the wire and at the sites.",
        "",
        "| deployment | round (s) | local training + evaluation (s) | outside (s) | of which the server's turn (s) "
        "| overhead |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def _attention(data: dict[str, Any]) -> list[str]:
    if "attention_seconds" not in data:
        return []
    return [
        "",
        "## Attention playground",
        "",
        f"`claimpt attention` on {data['attention_patients']:,} patients of site-1 (read and tensorise the "
        f"site, attention and code attributions for all, PNGs for {data['attention_rendered']}), "
        f"faithful-default model: {data['attention_seconds']:.1f} s.",
    ]


def _model(data: dict[str, Any]) -> list[str]:
    lines = []
    if "pretrain_speedup" in data:
        lines += [
            "",
            f"Training step vs the plain step it replaced (stock Keras RMSprop densifying the embedding "
            f"gradient, NVP and CP heads and losses unfused, autodiff gradients), side by side in one process: "
            f"{data['pretrain_speedup']:.2f}x.",
        ]
    if "precisions" in data:
        lines += ["", *_precision_tables(data)]
    if "model_parameters" in data:
        lines += [
            "",
            f"Model figures: faithful Claim-PT config at the paper's sizes (49,836 codes, 3,357 groups, "
            f"{data['model_parameters']:,} parameters), batch {data['batch_size']}, random paper-shaped "
            "inputs with 1-30 real visits.",
        ]
    return lines


def _data_signal(report: dict[str, Any]) -> list[str]:
    data = report["figures"]
    tasks = list(next(iter(data["label_prevalence"].values())))
    lines = [
        "",
        "## Data signal and site heterogeneity",
        "",
        f"Sites of {report['params']['patients_per_site']:,} patients each.",
        "",
        "| site | asthma logreg AUROC | " + " | ".join(f"{t} prevalence" for t in tasks) + " |",
        "|---|---:|" + "---:|" * len(tasks),
    ]
    for site, auroc in data["asthma_logreg_auroc"].items():
        prevalence = data["label_prevalence"][site]
        shown = "n/a" if auroc is None else f"{auroc:.3f}"
        lines.append(f"| {site} | {shown} | " + " | ".join(f"{v:.1%}" for v in prevalence.values()) + " |")
    names = list(data["site_js_divergence"])
    lines += [
        "",
        "Jensen-Shannon divergence (base 2) between site code distributions:",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for a in names:
        lines.append(f"| {a} | " + " | ".join(f"{data['site_js_divergence'][b][a]:.3f}" for b in names) + " |")
    return lines


def _markdown(report: dict[str, Any]) -> str:
    """bench.md: the figures, then one section per part the run measured."""
    data = report["figures"]
    sections = [
        _header(report),
        _scale(data),
        _federated_round(data),
        _deployment_rounds(data),
        _attention(data),
        _model(data),
        _data_signal(report),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"


def run_bench(
    out: Path,
    *,
    patients_per_site: int,
    sites: int,
    repeats: int,
    seed: int,
    scale_patients: int = 0,
    model: bool = True,
    federated_patients: int = 0,
    deployment_patients: int = 0,
    original: Path | None = None,
    precision: str = "auto",
) -> Path:
    if original is not None:
        if not model:
            raise DataValidationError(original, "the model figures (--model) to time the original beside")
        check_original_checkout(original)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="claimpt-bench-") as tmp:
        figures = _data_section(Path(tmp), patients_per_site, sites, repeats, seed)
        site_dirs = [Path(tmp) / "sites" / f"site-{i + 1}" for i in range(sites)]
        figures.update(tensorize_section(site_dirs, repeats))
        if model:
            figures.update(model_section(repeats, seed, bench_precisions(precision)))
            if original is not None:
                figures.update(original_section(original, MODEL_PATIENTS, repeats, seed))
                for by_precision in figures["precisions"].values():  # against its median and its fastest
                    for figure in ("pretrain", "predict"):
                        ours, theirs = (
                            by_precision[f"{figure}_patients_per_s"],
                            figures[f"original_{figure}_patients_per_s"],
                        )
                        by_precision[f"{figure}_vs_original"] = round(ours["median"] / theirs["median"], 2)
                        by_precision[f"{figure}_vs_original_fastest"] = round(ours["median"] / theirs["max"], 2)
            # after the model figures: the playground's eager gradient calls slowed the timed
            # predict loop that followed them in the same process (4,718 vs 8,157 patients/s)
            figures.update(attention_section(site_dirs[0]))
    figures["peak_rss_mb"] = peak_rss_mb()
    if scale_patients:
        figures.update(scale_section(scale_patients, seed))
    if federated_patients:
        figures.update(federated_section(federated_patients, seed))
    if deployment_patients:
        figures.update(deployment_section(deployment_patients, seed))
    report = {
        "machine": machine_info(),
        "versions": versions(),
        "params": {
            "patients_per_site": patients_per_site,
            "sites": sites,
            "repeats": repeats,
            "seed": seed,
            "scale_patients": scale_patients,
            "federated_patients": federated_patients,
            "deployment_patients": deployment_patients,
        },
        "figures": figures,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(_markdown(report))
    return out / "bench.md"
