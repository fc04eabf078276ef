"""`claimpt`: one command line for data teams, researchers and site operators. This module only
wires the command groups; each lives in its own module (and the coordinator's and the site's
beside their code, in `server/cli.py` and `client/cli.py`)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from client.cli import finetune, site_app
from client.passport_cli import passport
from server.cli import certs, server_app
from simulations.cli import advise, bench, data, experiment, inspect, pretrain, task

app = typer.Typer(
    name="claimpt",
    help="Federated pretraining and cross-institution transfer for claims/EHR visit transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only show warnings and errors.")] = False,
) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter stays out of the CLI
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr, force=True
    )


for command in (data.synth, data.validate, data.convert, data.split, certs):
    app.command()(command)
app.add_typer(task.app, name="task")
app.add_typer(pretrain.app, name="pretrain")
app.command("finetune")(finetune)
app.command("summarize")(inspect.summarize)
app.command("model-info")(inspect.model_info)
app.command()(inspect.attention)
app.command()(inspect.embed)
app.add_typer(experiment.app, name="experiment")
app.command("bench")(bench.bench)
app.command("passport")(passport)
app.command("advise")(advise.advise)
app.add_typer(site_app, name="site")
app.add_typer(server_app, name="server")
