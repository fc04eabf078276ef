"""`claimpt embed`: every patient's vector from the shared encoder, exported keyed by
(pseudonymous) subject id, and a 2-D projection coloured by site and by a label: how far apart
the sites sit, and whether pretraining already separates a condition (docs/architecture.md §3)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from shared_model.contract.checkpoint import load_checkpoint  # noqa: E402
from shared_model.data import DataValidationError, read_meds  # noqa: E402
from shared_model.data.paths import atomic_directory  # noqa: E402
from shared_model.evaluation.explain import patient_vectors, restore_model  # noqa: E402
from shared_model.tensors.tasks import NEXT_VISIT, split_of, task_samples  # noqa: E402
from shared_model.tensors.tensorize import latest_per_subject, select  # noqa: E402

log = logging.getLogger(__name__)
PLOT_POINTS_PER_SITE = 3000


@dataclass(frozen=True)
class EmbedSettings:
    label: str | None = None  # colour the second panel by this task's label (any positive row)
    limit: int = 0  # at most this many patients per site (0: all)
    seed: int = 0


def site_embeddings(
    checkpoint_dir: Path, data: list[Path], settings: EmbedSettings, verify_signature=None
) -> tuple[pd.DataFrame, np.ndarray]:
    """(one row per patient: subject_id, site, split, label; their vectors)."""
    checkpoint = load_checkpoint(checkpoint_dir, verify_signature=verify_signature)
    model = restore_model(checkpoint)
    frames, vectors = [], []
    for path in data:
        dataset = read_meds(path)
        if settings.label and settings.label not in dataset.labels:
            raise DataValidationError(
                path / "labels", f"labels for --label {settings.label}", found=sorted(dataset.labels)
            )
        arrays = latest_per_subject(task_samples(dataset, NEXT_VISIT, checkpoint.vocabulary))
        if settings.limit and len(arrays["subject_id"]) > settings.limit:
            rng = np.random.default_rng(settings.seed)
            arrays = select(arrays, np.sort(rng.choice(len(arrays["subject_id"]), settings.limit, replace=False)))
        frame = pd.DataFrame(
            {
                "subject_id": arrays["subject_id"],
                "site": path.name,
                "split": split_of(dataset, arrays["subject_id"]).astype(str),
            }
        )
        if settings.label:
            labels = dataset.labels[settings.label]
            positive = labels.groupby("subject_id")["boolean_value"].any()
            frame[settings.label] = frame["subject_id"].map(positive).astype("boolean")
        frames.append(frame)
        vectors.append(patient_vectors(model, arrays))
        log.info("%s: %d patient vectors", path.name, len(frame))
    return pd.concat(frames, ignore_index=True), np.concatenate(vectors)


def projection(vectors: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """2-D UMAP when the `umap-learn` package is installed, else PCA."""
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        pca = PCA(n_components=2, random_state=seed).fit(vectors)
        share = pca.explained_variance_ratio_
        return pca.transform(vectors), f"PCA (components 1-2: {share[0]:.0%}, {share[1]:.0%} of variance)"
    return umap.UMAP(random_state=seed).fit_transform(vectors), "UMAP"


def projection_png(
    path: Path, table: pd.DataFrame, points: np.ndarray, method: str, label: str | None, seed: int
) -> Path:
    rng = np.random.default_rng(seed)
    shown = np.concatenate(
        [
            rng.permutation(np.flatnonzero(table["site"].to_numpy() == site))[:PLOT_POINTS_PER_SITE]
            for site in table["site"].unique()
        ]
    )
    shown = rng.permutation(shown)  # no site drawn on top of all others
    panels = 2 if label else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.5), squeeze=False)
    ax = axes[0][0]
    for i, site in enumerate(sorted(table["site"].unique())):
        rows = shown[table["site"].to_numpy()[shown] == site]
        ax.scatter(points[rows, 0], points[rows, 1], s=4, alpha=0.5, color=f"C{i}", label=site)
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title("patient vectors by site")
    if label:
        ax = axes[0][1]
        values = table[label].iloc[shown]
        for name, mask, colour in (
            ("no label", values.isna(), "#cccccc"),
            (f"{label}: no", values.eq(False).fillna(False), "#2e86ab"),
            (f"{label}: yes", values.eq(True).fillna(False), "#d1495b"),
        ):
            rows = shown[mask.to_numpy(dtype=bool)]
            ax.scatter(
                points[rows, 0],
                points[rows, 1],
                s=4 if colour != "#d1495b" else 7,
                alpha=0.6,
                color=colour,
                label=f"{name} ({len(rows)})",
            )
        ax.legend(markerscale=3, fontsize=8)
        ax.set_title(f"patient vectors by {label}")
    for ax in axes[0]:
        ax.set_xlabel(f"{method.split(' ')[0]} 1")
        ax.set_ylabel(f"{method.split(' ')[0]} 2")
    fig.suptitle(method, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_embed(
    checkpoint_dir: Path,
    data: list[Path],
    out: Path,
    settings: EmbedSettings,
    *,
    verify_signature=None,
    overwrite: bool = False,
) -> Path:
    table, vectors = site_embeddings(checkpoint_dir, data, settings, verify_signature)
    points, method = projection(vectors, settings.seed)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        columns = pd.DataFrame(vectors.astype(np.float32), columns=[f"e{i:03d}" for i in range(vectors.shape[1])])
        pd.concat([table, columns], axis=1).to_parquet(tmp / "embeddings.parquet", index=False)
        projection_png(tmp / "projection.png", table, points, method, settings.label, settings.seed)
    log.info("wrote %s (%d patients, %d dimensions; %s)", out, len(table), vectors.shape[1], method)
    return out
