"""The `claimpt` command line: `app.py` wires the command groups, one module per group."""
