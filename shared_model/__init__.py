"""Shared model package: data schema and validation, tensorisation, the Claim-PT transformer,
objectives, fine-tuning, metrics and the checkpoint format.

Imports none of `client`, `server` or `simulations` (docs/architecture.md §1).
"""
