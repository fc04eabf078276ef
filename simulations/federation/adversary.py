"""Simulated faulty or malicious sites, as a simulation-only Flower mod.

`SITE:KIND[=VALUE][@ROUND]`, comma-separated. Kinds: `raise` (the client fails), `nan` (returns
NaN weights), `scale=V` (update multiplied by V), `signflip` (update negated), `noise=V`
(Gaussian noise of std V added to the weights). Without `@ROUND` the site misbehaves in every
round.

This lives in `simulations/`, outside the production ClientApp and outside the run config: the
simulation builds its ClientApp with `AdversaryMod` added (`client.app.make_client_app(mods=...)`),
and a deployed site, whose ClientApp has no such mod, refuses any run config that names an
adversary (an unknown key). A coordinator therefore cannot make real sites misbehave, e.g. make
two of three sites return the global model unchanged so that secure aggregation's sum reveals
the third site's update.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Context, Message

from shared_model.contract.passport import site_key

log = logging.getLogger(__name__)
KINDS = ("raise", "nan", "scale", "signflip", "noise")


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
        adversaries.append(
            Adversary(site, kind, float(value) if value else default, int(at_round) if at_round else None)
        )
    return adversaries


def corrupt_update(
    kind: str, value: float, global_weights: list[np.ndarray], local_weights: list[np.ndarray], rng: np.random.Generator
) -> list[np.ndarray]:
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


class AdversaryMod:
    """Flower mod (picklable, for the Ray engine): the named sites' replies to plain train
    messages are corrupted, or replaced by an exception. Sites are recognised by the `site-key`
    of their reply."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.adversaries = parse_adversaries(spec)

    def __call__(self, msg: Message, context: Context, call_next) -> Message:
        if msg.metadata.message_type != "train" or "arrays" not in msg.content.array_records:
            return call_next(msg, context)
        global_weights = msg.content["arrays"].to_numpy_ndarrays()
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        key, server_round = int(reply.content["metrics"]["site-key"]), int(msg.content["config"]["server-round"])
        adversary = next(
            (a for a in self.adversaries if site_key(a.site) == key and a.active(a.site, server_round)), None
        )
        if adversary is None:
            return reply
        if adversary.kind == "raise":
            raise RuntimeError(f"simulated failure of {adversary.site} in round {server_round}")
        log.warning("%s misbehaves in round %d: %s", adversary.site, server_round, adversary.kind)
        rng = np.random.default_rng([server_round, key])
        weights = corrupt_update(
            adversary.kind, adversary.value, global_weights, reply.content["arrays"].to_numpy_ndarrays(), rng
        )
        reply.content["arrays"] = ArrayRecord(weights)
        return reply
