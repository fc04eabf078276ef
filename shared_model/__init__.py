"""The shared model, in its layers (docs/architecture.md §1): `data` (MEDS reading and
validation) -> `tensors` -> `model` -> `training`, with `contract` (what server and sites agree
on) and `runtime` (what every command line shares); `settings` is the one way a setting is
declared.

Imports none of `client`, `server` or `simulations`.
"""
