"""`claimpt attention`: the attention playground. For chosen patients of a site: the real
per-layer, per-head attention over their visits and the codes that drive the explained output,
as PNGs and one self-contained `attention.html` (docs/architecture.md §3)."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from shared_model.contract.checkpoint import load_checkpoint  # noqa: E402
from shared_model.data import DataValidationError, MedsDataset, read_meds  # noqa: E402
from shared_model.data.paths import atomic_directory  # noqa: E402
from shared_model.evaluation.explain import ExplainedModel, Explanation, explain, restore_model  # noqa: E402
from shared_model.evaluation.html_page import embedded_png, html_page  # noqa: E402
from shared_model.tensors.tasks import split_of, task_samples  # noqa: E402
from shared_model.tensors.tensorize import VISIT_TYPE_IDS, latest_per_subject, select  # noqa: E402
from shared_model.tensors.vocabulary import FIRST_CODE_ID, UNK_ID  # noqa: E402

log = logging.getLogger(__name__)
VISIT_TYPE_NAMES = {v: k.split("/")[1] for k, v in VISIT_TYPE_IDS.items()} | {1: "OTHER"}
TOP_CODES = 15


@dataclass(frozen=True)
class PlaygroundSettings:
    patients: tuple[int, ...] = ()  # explicit (pseudonymous) subject ids; else a random sample
    sample: int = 20
    split: str = "held_out"
    render: int = 20  # patients that get PNGs and a section in attention.html
    seed: int = 0
    group: str = ""  # pretrained checkpoints: explain this next-visit group's logit (default: each patient's top group)


def choose_samples(
    dataset: MedsDataset, model: ExplainedModel, vocabulary, settings: PlaygroundSettings
) -> dict[str, np.ndarray]:
    """One sample per patient (the latest prediction time) for the chosen patients."""
    arrays = latest_per_subject(task_samples(dataset, model.task, vocabulary))
    if settings.patients:
        wanted = np.asarray(settings.patients, dtype=np.int64)
        missing = np.setdiff1d(wanted, arrays["subject_id"])
        if missing.size:
            raise DataValidationError(
                dataset.root,
                f"a subject with a {model.task} sample for every --patient",
                column="subject_id",
                found=int(missing[0]),
            )
        rows = np.concatenate([np.flatnonzero(arrays["subject_id"] == w) for w in wanted])
        return select(arrays, rows)
    candidates = np.flatnonzero(split_of(dataset, arrays["subject_id"]) == settings.split)
    if candidates.size == 0:
        raise DataValidationError(dataset.root, f"patients in the {settings.split!r} split", column="split")
    rng = np.random.default_rng(settings.seed)
    rows = np.sort(rng.choice(candidates, size=min(settings.sample, candidates.size), replace=False))
    return select(arrays, rows)


def code_names(vocabulary) -> dict[int, str]:
    """Code id -> code string (UNK for codes outside the vocabulary)."""
    return {UNK_ID: "UNK", **{i + FIRST_CODE_ID: c for i, c in enumerate(vocabulary.codes)}}


def visit_date_and_type(arrays: dict[str, np.ndarray], i: int, v: int) -> tuple[str, str]:
    day = int(arrays["prediction_day"][i]) - int(arrays["days_before"][i, v])
    return str(np.datetime64(day, "D")), VISIT_TYPE_NAMES.get(int(arrays["visit_type"][i, v]), "?")


def visit_rows(
    arrays: dict[str, np.ndarray], i: int, explanation: Explanation, names: dict[int, str], descriptions: dict[str, str]
) -> pd.DataFrame:
    """One row per code of patient i's real visits: date, visit type, code, description, attribution."""
    rows = []
    for v in np.flatnonzero(arrays["visit_type"][i] > 0):
        date, kind = visit_date_and_type(arrays, i, v)
        for c in np.flatnonzero(arrays["codes"][i, v] > 0):
            code = names[int(arrays["codes"][i, v, c])]
            rows.append(
                {
                    "visit": int(v),
                    "date": date,
                    "type": kind,
                    "code": code,
                    "description": descriptions.get(code, ""),
                    "attribution": float(explanation.code_attribution[i, v, c]),
                }
            )
    return pd.DataFrame(rows, columns=["visit", "date", "type", "code", "description", "attribution"])


def token_labels(arrays: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, list[str]]:
    visits = np.flatnonzero(arrays["visit_type"][i] > 0)
    labels = ["demographics", *(" ".join(visit_date_and_type(arrays, i, v)) for v in visits)]
    return np.r_[0, visits + 1], labels


def attention_png(
    path: Path, explanation: Explanation, i: int, tokens: np.ndarray, labels: list[str], title: str
) -> Path:
    """Per layer and head: the attention matrix over the patient's real tokens (colour scaled to its
    own range: a 1-layer Claim-PT model attends almost uniformly), and below it the weights of the
    demographic token, the row whose output becomes the patient vector."""
    layers, heads = len(explanation.attention), explanation.attention[0].shape[1]
    size = max(4.0, 0.22 * len(tokens) + 2.5)
    fig, axes = plt.subplots(
        2 * layers,
        heads,
        figsize=(size * heads, (size + 2.2) * layers),
        squeeze=False,
        gridspec_kw={"height_ratios": [size, 2.2] * layers},
    )
    uniform = 1.0 / len(tokens)
    for layer in range(layers):
        for head in range(heads):
            ax, strip = axes[2 * layer][head], axes[2 * layer + 1][head]
            weights = explanation.attention[layer][i, head][np.ix_(tokens, tokens)]
            image = ax.imshow(weights, cmap="viridis", vmin=float(weights.min()), vmax=float(weights.max()))
            ax.set_title(f"layer {layer + 1}, head {head + 1} (uniform would be {uniform:.3f})", fontsize=10)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
            ax.set_xlabel("attended token (key)", fontsize=8)
            ax.set_ylabel("attending token (query)", fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            strip.bar(range(len(labels)), weights[0], color="#2e86ab")
            strip.axhline(uniform, color="#d1495b", linewidth=0.8, linestyle="--")
            strip.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            strip.set_ylabel("weight", fontsize=8)
            strip.set_title("attention of the demographic token (read out as the patient vector)", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def codes_png(path: Path, rows: pd.DataFrame, title: str) -> Path:
    top = rows.reindex(rows["attribution"].abs().sort_values(ascending=False).index).head(TOP_CODES)[::-1]
    fig, ax = plt.subplots(figsize=(10, 0.35 * max(len(top), 3) + 1.4))
    labels = [f"{r.date} {r.type}  {r.code}  {r.description[:48]}" for r in top.itertuples()]
    ax.barh(range(len(top)), top["attribution"], color=np.where(top["attribution"] >= 0, "#d1495b", "#2e86ab"))
    ax.set_yticks(range(len(top)), labels, fontsize=7)
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.set_xlabel("gradient x input on the code embedding (red raises the explained logit)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def output_index(model: ExplainedModel, vocabulary, group: str) -> int | None:
    if not group:
        return None
    if model.task != "next_visit" or group not in vocabulary.groups:
        raise DataValidationError(
            "--group",
            f"a next-visit group of a pretrained checkpoint's vocabulary (e.g. {vocabulary.groups[0]})",
            found=group,
        )
    return vocabulary.groups.index(group)


def output_name(model: ExplainedModel, vocabulary, index: int) -> str:
    if model.task == "next_visit":
        return f"next-visit group {vocabulary.groups[index]}"
    return f"{model.task} logit"


def run_playground(
    checkpoint_dir: Path,
    data: Path,
    out: Path,
    settings: PlaygroundSettings,
    verify_signature=None,
    overwrite: bool = False,
) -> Path:
    checkpoint = load_checkpoint(checkpoint_dir, verify_signature=verify_signature)
    model = restore_model(checkpoint)
    dataset = read_meds(data)
    arrays = choose_samples(dataset, model, checkpoint.vocabulary, settings)
    explanation = explain(model, arrays, output_index=output_index(model, checkpoint.vocabulary, settings.group))
    descriptions = dict(
        zip(dataset.codes["code"].astype(str), dataset.codes["description"].fillna("").astype(str), strict=True)
    )
    log.info("explained %d patients with %s (%s)", len(arrays["subject_id"]), checkpoint_dir, model.task)
    names = code_names(checkpoint.vocabulary)
    rows = [visit_rows(arrays, i, explanation, names, descriptions) for i in range(len(arrays["subject_id"]))]
    with atomic_directory(out, overwrite=overwrite) as tmp:
        summary = summary_table(arrays, explanation, rows, checkpoint.vocabulary, model)
        summary.to_csv(tmp / "patients.csv", index=False)
        sections = [
            _patient_section(tmp, arrays, i, explanation, rows[i], checkpoint.vocabulary, model)
            for i in range(min(settings.render, len(rows)))
        ]
        intro = [
            f"<p>Checkpoint <code>{html.escape(str(checkpoint_dir))}</code> ({html.escape(checkpoint.kind)}, "
            f"{model.config.n_layers} layer(s) x {model.config.n_heads} heads); data "
            f"<code>{html.escape(str(data))}</code>. Attention: the softmax weights of each head (rows: the "
            "attending token, columns: the attended one; padded visits get none). Attribution: gradient x "
            "input of the explained logit on each code's embedding.</p>",
            "<h2>Patients</h2>",
            summary.to_html(index=False, border=0, float_format=lambda x: f"{x:.3f}"),
            *sections,
        ]
        (tmp / "attention.html").write_text(html_page("Attention playground", intro))
    return out / "attention.html"


def summary_table(
    arrays, explanation: Explanation, visits_per_patient: list[pd.DataFrame], vocabulary, model: ExplainedModel
) -> pd.DataFrame:
    rows = []
    for i, subject in enumerate(arrays["subject_id"]):
        visits = visits_per_patient[i]
        top = visits.reindex(visits["attribution"].abs().sort_values(ascending=False).index).head(3)
        rows.append(
            {
                "patient": int(subject),
                "visits": int((arrays["visit_type"][i] > 0).sum()),
                "explained output": output_name(model, vocabulary, int(explanation.output_index[i])),
                "logit": float(explanation.logit[i]),
                "top codes": ", ".join(top["code"]),
            }
        )
    return pd.DataFrame(rows)


def _patient_section(
    directory: Path, arrays, i: int, explanation: Explanation, rows: pd.DataFrame, vocabulary, model: ExplainedModel
) -> str:
    subject = int(arrays["subject_id"][i])
    target = output_name(model, vocabulary, int(explanation.output_index[i]))
    title = f"patient {subject}: {target} (logit {explanation.logit[i]:.2f})"
    tokens, labels = token_labels(arrays, i)
    attention = attention_png(directory / f"attention-{subject}.png", explanation, i, tokens, labels, title)
    codes = codes_png(directory / f"codes-{subject}.png", rows, title)
    table = rows.to_html(index=False, border=0, float_format=lambda x: f"{x:+.3f}")
    return (
        f"<h2 id='p{subject}'>Patient {subject}</h2><p>{html.escape(target)}</p>"
        f"{embedded_png(attention)}{embedded_png(codes)}<details><summary>every code</summary>{table}</details>"
    )
