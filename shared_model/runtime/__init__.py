"""Plumbing every command line shares, kept apart from the model: turning bad input into exit
code 2, command-line options generated from the frozen config dataclasses, and the process
groups of Flower's daemons. `server` and `client` may not import each other, so what both need
lives here (docs/architecture.md §1)."""
