"""Simulated faulty or malicious sites (simulation only): `SITE:KIND[=VALUE][@ROUND]`, comma-separated.

Kinds: `raise` (the client fails), `nan` (returns NaN weights), `scale=V` (update multiplied by
V), `signflip` (update negated), `noise=V` (Gaussian noise of std V added to the weights),
`labelflip` (next-visit targets shuffled across patients before training). Without `@ROUND`
the site misbehaves in every round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("raise", "nan", "scale", "signflip", "noise", "labelflip")


@dataclass(frozen=True)
class Adversary:
    site: str
    kind: str
    value: float = 0.0
    round: int | None = None

    def active(self, site: str, server_round: int) -> bool:
        return self.site == site and (self.round is None or self.round == server_round)


def parse_adversaries(text: str) -> list[Adversary]:
    adversaries = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        site, _, behaviour = entry.partition(":")
        behaviour, _, at_round = behaviour.partition("@")
        kind, _, value = behaviour.partition("=")
        if not site or kind not in KINDS:
            raise ValueError(f"adversary {entry!r}: expected SITE:KIND[=VALUE][@ROUND] with KIND in {KINDS}")
        default = {"scale": 10.0, "noise": 1.0}.get(kind, 0.0)
        adversaries.append(Adversary(site, kind, float(value) if value else default,
                                     int(at_round) if at_round else None))
    return adversaries


def corrupt_update(kind: str, value: float, global_weights: list[np.ndarray], local_weights: list[np.ndarray],
                   rng: np.random.Generator) -> list[np.ndarray]:
    """What a misbehaving site sends instead of its honest local weights."""
    if kind == "nan":
        return [np.full_like(w, np.nan) for w in local_weights]
    if kind == "scale":
        return [g + value * (w - g) for g, w in zip(global_weights, local_weights, strict=True)]
    if kind == "signflip":
        return [g - (w - g) for g, w in zip(global_weights, local_weights, strict=True)]
    if kind == "noise":
        return [w + rng.normal(0.0, value, w.shape).astype(w.dtype) for w in local_weights]
    return local_weights


def flip_labels(arrays: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Data poisoning: next-visit targets shuffled across patients."""
    return {**arrays, "target_groups": arrays["target_groups"][rng.permutation(len(arrays["target_groups"]))]}
