"""The tables the documents show are generated from the code that declares them: a key, layer or
choice added in one place and not the other fails here, with the command that writes the table."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from client.policy import SitePolicy, load_policy
from shared_model.settings import settings_table
from simulations.cli.app import app

DOCS = Path(__file__).resolve().parent.parent / "docs"


def generated_block(document: Path, name: str) -> str:
    """The text between `<!-- NAME: begin -->` and `<!-- NAME: end -->` in `document`."""
    found = re.search(rf"<!-- {name}: begin -->\n(.*?)<!-- {name}: end -->", document.read_text(), re.S)
    assert found, f"{document} has no generated block {name!r}"
    return found.group(1)


def test_the_site_policy_table_in_the_deployment_guide_is_the_policy_s_fields() -> None:
    documented = generated_block(DOCS / "deployment.md", "site-policy-table")
    assert documented == settings_table(SitePolicy, kebab=False), (
        "docs/deployment.md's policy table differs from client/policy.py: paste `claimpt site policy --table`"
    )


def test_the_policy_example_is_a_policy_file_of_the_defaults_and_check_reads_one_back(tmp_path: Path) -> None:
    runner = CliRunner()
    example = runner.invoke(app, ["site", "policy", "--example"])
    assert example.exit_code == 0, example.output
    assert set(tomllib.loads(example.output)) == {f for f in SitePolicy.__dataclass_fields__}
    written = tmp_path / "site-policy.toml"
    written.write_text(example.output.replace("k_anonymity = 11 ", "k_anonymity = 25 "))
    assert load_policy(written) == SitePolicy(k_anonymity=25)
    checked = runner.invoke(app, ["site", "policy", "--check", str(written)])
    assert checked.exit_code == 0 and "k_anonymity = 25 " in checked.output
