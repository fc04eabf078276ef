"""Evaluation: how a model is judged and inspected: metrics with bootstrap intervals, the
demographic subgroups, held-out predictions in the MEDS-DEV format, what a model attends to and
which codes drive its outputs, drawn as the attention playground and the embedding map
(docs/architecture.md §3)."""
