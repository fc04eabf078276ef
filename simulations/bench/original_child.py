"""Times the original Claim-PT model, side by side with this project's step, in a child process
(`python -m simulations.bench.original_child CHECKOUT PATIENTS REPEATS SEED`).

The original repository (github.com/2g-XzenG/Claim-PT) carries no licence, so none of its code is
in this project: the user points `claimpt bench --original` at their own checkout, and this
process imports its unchanged `pretraining/cpt.py` (TF 2.1-era `tf.keras`, run here through
tf-keras) and compiles it exactly as its `train.py` does (RMSprop, its losses and loss weights).
Only the feeding is ours: the same paper-shaped patients as the project's figures, laid out as
the original's `DataGenerator` lays them out (visits left-aligned, dense multi-hot targets),
built batch by batch with numpy instead of Python loops, which would otherwise be the bottleneck.
Prints one JSON line: training and inference patients/s (median, min, max over `REPEATS` epochs
after a warm-up epoch).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

ORIGINAL_UTIL_TYPES = 3  # IP, RX, OP (0 = padding)
ORIGINAL_DATE_VOCAB = 366  # train.py's date_vocab


def original_layout(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The project's paper-shaped arrays (real visits right-aligned) as the original's inputs
    (real visits left-aligned, day of year 1-365, visit type 1-3, age and sex tokens in one
    vocabulary) and its targets as group indices (densified per batch)."""
    valid = arrays["visit_type"] > 0
    order = np.argsort(~valid, axis=1, kind="stable")  # real visits first, in their order

    def left(name: str) -> np.ndarray:
        field = arrays[name]
        return np.take_along_axis(field, order.reshape(order.shape + (1,) * (field.ndim - 2)), axis=1)

    visit_valid = np.take_along_axis(valid, order, axis=1)
    ages, sexes = arrays["demo"][:, 0], arrays["demo"][:, 1]
    return {
        "demo_feature": np.stack([ages + 1, ages.max() + 2 + sexes], axis=1).astype(np.float32),
        "code_feature": left("codes").astype(np.float32),
        "util_feature": np.where(visit_valid, (left("visit_type") - 1) % ORIGINAL_UTIL_TYPES + 1, 0).astype(np.float32),
        "date_feature": np.where(visit_valid, np.minimum(left("date_index"), ORIGINAL_DATE_VOCAB - 1), 0).astype(
            np.float32
        ),
        "visit_groups": left("visit_groups"),
        "target_groups": arrays["target_groups"],
    }


def multi_hot(indices: np.ndarray, n_groups: int) -> np.ndarray:
    """(..., K) group indices, -1 padding -> (..., n_groups) float32 multi-hot."""
    dense = np.zeros((*indices.shape[:-1], n_groups + 1), np.float32)  # column n_groups takes the padding
    np.put_along_axis(dense, np.where(indices >= 0, indices, n_groups), 1.0, axis=-1)
    return dense[..., :n_groups]


def main(argv: list[str]) -> None:
    checkout, patients, repeats, seed = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # the original is Keras 2 code: tf.keras = tf-keras
    import statistics
    import time

    import tensorflow as tf

    from simulations.bench.model import PAPER_BATCH, PAPER_GROUPS, PAPER_VOCAB, paper_shaped_arrays

    sys.path.insert(0, str(checkout / "pretraining"))
    import cpt  # the original model, unchanged

    tf.keras.utils.set_random_seed(seed)
    data = original_layout(paper_shaped_arrays(patients, seed))
    inputs = ["demo_feature", "code_feature", "util_feature", "date_feature"]

    class Batches(tf.keras.utils.Sequence):
        def __init__(self, shuffle: bool) -> None:
            self.order = np.arange(patients)
            self.rng = np.random.default_rng(seed)
            self.shuffle = shuffle

        def __len__(self) -> int:
            return -(-patients // PAPER_BATCH)

        def __getitem__(self, index: int):
            rows = self.order[index * PAPER_BATCH : (index + 1) * PAPER_BATCH]
            x = {name: data[name][rows] for name in inputs}
            y = {
                "code_label": multi_hot(data["target_groups"][rows], PAPER_GROUPS),
                "cat_label": multi_hot(data["visit_groups"][rows], PAPER_GROUPS),
                "cls_label": np.zeros((len(rows), 1), np.float32),  # loss weight 0 in the original
            }
            return x, y

        def on_epoch_end(self) -> None:
            if self.shuffle:
                self.rng.shuffle(self.order)

    model = cpt.model(
        max_visit=30,
        max_code=10,
        max_demo=2,
        demo_vocab=int(data["demo_feature"].max()) + 1,
        code_vocab=PAPER_VOCAB,
        date_vocab=ORIGINAL_DATE_VOCAB,
        util_vocab=ORIGINAL_UTIL_TYPES + 1,
        cat_vocab=PAPER_GROUPS,
        patient_dim=100,
    )
    model.compile(optimizer="RMSprop", loss=cpt.model_losses, loss_weights=cpt.model_weights)
    train, predict_inputs = Batches(shuffle=True), {name: data[name] for name in inputs}

    def rates(work) -> dict[str, float]:
        work()  # warm-up: tracing and the first epoch's allocations
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            seconds.append(time.perf_counter() - started)
        per_s = [patients / s for s in seconds]
        return {"median": statistics.median(per_s), "min": min(per_s), "max": max(per_s), "unit": "patients/s"}

    figures = {
        "original_pretrain_patients_per_s": rates(lambda: model.fit(train, epochs=1, verbose=0)),
        "original_predict_patients_per_s": rates(
            lambda: model.predict(predict_inputs, batch_size=PAPER_BATCH, verbose=0)
        ),
        "original_parameters": int(model.count_params()),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
