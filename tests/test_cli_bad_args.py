"""Every command of `claimpt`, driven with wrong arguments: exit 2, a message and no traceback,
and nothing written. The table must name every command (a new command without bad-argument
cases fails the first test)."""

from __future__ import annotations

import click
import pytest
from typer.main import get_command
from typer.testing import CliRunner

from simulations.cli.app import app

# Placeholders: {tiny} a valid MEDS dataset, {out} a new output path, {missing} a path that does
# not exist, {junk} a file of random bytes, {empty} an empty directory, {toml} a broken TOML file.
BAD_ARGUMENTS: dict[str, list[list[str]]] = {
    "synth": [
        ["--out", "{out}", "--patients", "many"],
        ["--out", "{out}", "--style", "klingon"],
        ["--out", "{out}", "--shift", "dialect=2"],
        ["--out", "{out}", "--shift", "9"],
        ["--out", "{out}", "--shift", "size"],
    ],
    "validate": [["{missing}"], ["{junk}"], ["{empty}"]],
    "convert": [
        ["--claims", "{missing}", "--patients", "{missing}", "--out", "{out}"],
        ["--claims", "{junk}", "--patients", "{junk}", "--out", "{out}"],
    ],
    "split": [
        ["--data", "{missing}", "--out", "{out}"],
        ["--data", "{junk}", "--out", "{out}"],
        ["--data", "{tiny}", "--out", "{out}", "--skew", "0.1"],
        ["--data", "{tiny}", "--out", "{out}", "--sites", "0"],
        ["--data", "{tiny}", "--out", "{empty}"],
    ],
    "certs": [["--out", "{out}", "--hosts", ""], ["--out", "{out}", "--hosts", "a", "--days", "0"]],
    "finetune": [
        ["--data", "{missing}", "--task", "asthma", "--out", "{out}"],
        ["--data", "{tiny}", "--task", "asthma", "--out", "{out}", "--adaptation", "telepathy"],
        ["--data", "{tiny}", "--task", "asthma", "--out", "{out}", "--checkpoint", "{empty}"],
        ["--data", "{tiny}", "--task", "asthma", "--out", "{out}", "--model", "oracle"],
        ["--data", "{tiny}", "--task", "no_such_task", "--out", "{out}"],
    ],
    "task extract": [
        ["--config", "{missing}", "--data", "{tiny}"],
        ["--config", "{junk}", "--data", "{tiny}"],
        ["--config", "{toml}", "--data", "{missing}"],
        ["--config", "{toml}", "--data", "{tiny}", "--name", "../escape"],
    ],
    "summarize": [["{missing}"], ["{junk}"]],
    "passport": [
        ["{missing}", "--server-public-key", "{missing}", "--json", "{out}"],
        ["{empty}", "--server-public-key", "{junk}", "--json", "{out}"],
        ["{empty}", "--server-public-key", "{missing}", "--site-state", "{empty}"],
    ],
    "model-info": [
        ["--vocab-size", "-1", "--groups", "10"],
        ["--vocab-size", "100", "--groups", "10", "--n-heads", "7"],
    ],
    "attention": [
        ["--checkpoint", "{missing}", "--data", "{tiny}", "--out", "{out}"],
        ["--checkpoint", "{empty}", "--data", "{tiny}", "--out", "{out}"],
    ],
    "embed": [
        ["--checkpoint", "{missing}", "--data", "{tiny}", "--out", "{out}"],
        ["--checkpoint", "{junk}", "--data", "{tiny}", "--out", "{out}"],
    ],
    "bench": [
        ["--out", "{out}", "--sites", "1"],
        ["--out", "{out}", "--patients", "-5"],
        ["--out", "{out}", "--original", "{empty}"],
        ["--out", "{out}", "--precision", "half"],
    ],
    "pretrain central": [
        ["--data", "{missing}", "--out", "{out}"],
        ["--data", "{tiny}", "--out", "{out}", "--epochs", "0"],
        ["--data", "{tiny}", "--out", "{out}", "--target-vocabularies", "ICD/10"],
        ["--data", "{tiny}", "--out", "{out}", "--n-heads", "5"],
        ["--data", "{tiny}", "--out", "{out}", "--precision", "float16"],
    ],
    "pretrain federated": [
        ["--data", "{missing}", "--data", "{missing}", "--out", "{out}"],
        ["--data", "{tiny}", "--out", "{out}"],  # one site, two required
        ["--data", "{tiny}", "--out", "{out}", "--strategy", "anarchy"],
        ["--data", "{tiny}", "--out", "{out}", "--adversary", "site-1:teleport"],
        ["--data", "{tiny}", "--data", "{tiny}", "--out", "{out}", "--precision", "auto"],  # not for a federation
    ],
    "experiment claim-pt": [["--out", "{out}", "--data", "{missing}"], ["--out", "{out}", "--seeds", "one,two"]],
    "experiment fed-vs-central": [
        ["--out", "{out}", "--data", "{missing}"],
        ["--out", "{out}", "--rounds", "0"],
        ["--out", "{out}", "--strategy", "anarchy"],
    ],
    "experiment transfer": [
        ["--data", "{missing}", "--out", "{out}"],
        ["--data", "{empty}", "--out", "{out}"],
        ["--data", "{empty}", "--out", "{out}", "--config", "{toml}"],
        ["--data", "{empty}", "--out", "{out}", "--precision", "half"],
    ],
    "experiment precision": [
        ["--data", "{missing}", "--out", "{out}"],
        ["--data", "{empty}", "--out", "{out}", "--config", "{toml}"],
        ["--data", "{empty}", "--out", "{out}", "--pretrain-seeds", "one"],
    ],
    "experiment advisor": [
        ["--out", "{out}", "--config", "{toml}"],
        ["--out", "{out}", "--only", "9"],
        ["--out", "{out}", "--only", "one"],
    ],
    "advise": [
        ["--data", "{missing}", "--data", "{tiny}", "--out", "{out}"],
        ["--data", "{tiny}", "--out", "{out}"],  # one site: nobody to partner with
        ["--data", "{tiny}", "--data", "{empty}", "--out", "{out}", "--predictor", "{junk}"],
        ["--data", "{tiny}", "--data", "{empty}", "--out", "{out}"],
    ],
    "experiment privacy": [
        ["--data", "{missing}", "--out", "{out}"],
        ["--data", "{empty}", "--out", "{out}", "--config", "{toml}"],
    ],
    "site prepare": [["--raw", "{missing}", "--out", "{out}"], ["--raw", "{junk}", "--out", "{out}"]],
    "site join": [
        ["--superlink", "127.0.0.1:1", "--data", "{missing}", "--site-id", "a", "--insecure"],
        ["--superlink", "127.0.0.1:1", "--data", "{tiny}", "--site-id", "a", "--policy", "{toml}", "--insecure"],
    ],
    "site status": [["--state", "{missing}"], ["--state", "{junk}"]],
    "site policy": [
        [],
        ["--example", "--table"],
        ["--check", "{missing}"],
        ["--check", "{toml}"],
        ["--check", "{junk}"],
    ],
    "server status": [["--state", "{missing}"], ["--state", "{empty}"]],
    "site finetune": [
        [
            "--checkpoint",
            "{missing}",
            "--server-public-key",
            "{junk}",
            "--data",
            "{tiny}",
            "--task",
            "a",
            "--out",
            "{out}",
        ],
        [
            "--checkpoint",
            "{empty}",
            "--server-public-key",
            "{missing}",
            "--data",
            "{tiny}",
            "--task",
            "a",
            "--out",
            "{out}",
        ],
    ],
    "server start": [["--certs", "{missing}", "--state", "{out}"], ["--port", "70000", "--state", "{out}"]],
    "site keys": [["--site-id", "a"], ["--site-id", "a", "--out", "{junk}"]],
    "site approve": [
        ["--app", "{empty}", "--key", "{missing}", "--site-id", "a", "--out", "{out}"],
        ["--app", "{empty}", "--key", "{junk}", "--site-id", "a", "--out", "{out}"],
    ],
    "server enrol": [
        ["--site", "a", "--public-key", "{missing}", "--state", "{out}"],
        ["--site", "a", "--public-key", "{junk}", "--state", "{out}"],
        ["--site", "a", "--public-key", "{toml}", "--state", "{out}"],
    ],
    "server submit": [["--app-key", "{missing}"], ["--app-key", "{junk}", "--run-config", "num-server-rounds=0"]],
}


def _commands(command: click.Command, prefix: tuple[str, ...] = ()) -> list[str]:
    if isinstance(command, click.Group):
        return [name for key, sub in sorted(command.commands.items()) for name in _commands(sub, (*prefix, key))]
    return [" ".join(prefix)]


def test_every_command_has_bad_argument_cases() -> None:
    assert sorted(_commands(get_command(app))) == sorted(BAD_ARGUMENTS)


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


CASES = [(name, args) for name, cases in BAD_ARGUMENTS.items() for args in cases]


@pytest.mark.parametrize(("command", "arguments"), CASES, ids=[f"{c}:{' '.join(a)}"[:60] for c, a in CASES])
def test_bad_arguments_exit_2_with_a_message_and_write_nothing(
    command: str, arguments: list[str], tiny_meds, tmp_path, monkeypatch
) -> None:
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    (work / "junk").write_bytes(bytes(range(256)) * 4)
    (work / "broken.toml").write_text("[grid\nseeds = [1, 2\n")
    places = {
        "{tiny}": str(tiny_meds),
        "{out}": str(work / "out"),
        "{missing}": str(work / "missing"),
        "{junk}": str(work / "junk"),
        "{empty}": str(work / "empty"),
        "{toml}": str(work / "broken.toml"),
    }
    monkeypatch.chdir(work)
    before, dataset_before = _tree(work), _tree(tiny_meds)
    result = CliRunner().invoke(app, [*command.split(), *[places.get(a, a) for a in arguments]])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.strip()
    assert _tree(work) == before and _tree(tiny_meds) == dataset_before  # nothing written


def test_a_submitted_run_dir_must_be_absolute() -> None:
    """The ServerApp runs in the SuperLink's directory: `server submit` would look for the run's
    outcome elsewhere than where a relative run-dir put it."""
    from server.submit import run_dir_of

    assert str(run_dir_of("num-server-rounds=2 run-dir='/srv/runs/a'")) == "/srv/runs/a"
    for bad in ("num-server-rounds=2", "run-dir='runs/a'", "run-dir=''"):
        with pytest.raises(ValueError, match="run-dir"):
            run_dir_of(bad)
