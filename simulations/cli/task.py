"""`claimpt task extract`: task labels from an ACES task configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared_model.runtime.options import bad_input_exits_2

app = typer.Typer(help="Define prediction tasks the standard way (ACES task configurations).", no_args_is_help=True)


@app.command("extract")
@bad_input_exits_2
def extract(
    config: Annotated[
        Path, typer.Option(help="ACES task configuration (YAML), e.g. simulations/synth/tasks/asthma.yaml.")
    ],
    data: Annotated[Path, typer.Option(help="The MEDS dataset (its root or its data/ folder).")],
    name: Annotated[str | None, typer.Option(help="Task name (default: the configuration's file name).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing labels/<task>.parquet.")] = False,
) -> None:
    """Run the task over every subject and write labels/<task>.parquet (MEDS label schema) beside
    the dataset, where `claimpt finetune --task <task>` finds it."""
    from shared_model.data.aces_tasks import extract_labels, write_labels
    from shared_model.data.meds import MedsLayout
    from shared_model.tensors.tasks import MAX_TASK_NAME, is_task_name

    task = name or config.stem
    if not is_task_name(task):
        raise typer.BadParameter(f"--name must be at most {MAX_TASK_NAME} letters, digits, - and _, got {task!r}")
    target = MedsLayout.of(data).root / "labels" / f"{task}.parquet"
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (use --force to replace it)")
    labels = extract_labels(config, data)
    write_labels(labels, target)
    typer.echo(f"wrote {target}: {len(labels)} rows, {int(labels['boolean_value'].sum())} positive")
