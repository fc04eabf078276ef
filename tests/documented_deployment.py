"""The deployment guide as a program: the commands of docs/deployment.md "## Steps", read from the
document, for the deployment test to run as written on one host.

A step's bash block starts with `# coordinator` (run once, on the server host) or `# each site`
(run at every site). Only what a one-host test must change is substituted: the host name, the
directories, the ports and, at the second site, its name. Everything else (every command, flag
and option) is the document's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "deployment.md"
README = REPO / "README.md"
FIRST_SITE = "hospital-a"
LONG_RUNNING = ("claimpt server start", "claimpt site join")  # services: started, not waited for


@dataclass(frozen=True)
class Block:
    role: str  # "coordinator" or "site"
    commands: tuple[str, ...]


def bash_blocks(markdown: str) -> list[list[str]]:
    """The lines of every ```bash block, indentation removed."""
    blocks = re.findall(r"^[ \t]*```bash\n(.*?)^[ \t]*```", markdown, flags=re.S | re.M)
    return [[line.strip() for line in block.splitlines()] for block in blocks]


def commands(lines: list[str]) -> list[str]:
    """Shell commands: continuation lines joined, comments and blank lines dropped."""
    joined, current = [], ""
    for line in lines:
        if line.startswith("#") and not current:
            continue
        line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        if current + line:
            joined.append(" ".join((current + line).split()))
        current = ""
    return joined


def documented_steps(guide: Path = GUIDE) -> list[Block]:
    steps = guide.read_text().split("## Steps", 1)[1]
    blocks = []
    for lines in bash_blocks(steps):
        head = lines[0] if lines else ""
        if head.startswith("# coordinator"):
            role = "coordinator"
        elif head.startswith("# each site"):
            role = "site"
        else:
            raise ValueError(f"a step's block must start with '# coordinator' or '# each site': {head!r}")
        blocks.append(Block(role, tuple(commands(lines))))
    return blocks


def readme_commands(readme: Path = README) -> list[str]:
    section = readme.read_text().split("## Deploying at a site", 1)[1].split("\n## ", 1)[0]
    return [c for lines in bash_blocks(section) for c in commands(lines)]


def site_policy(guide: Path = GUIDE) -> str:
    """The documented example policy (the ```toml block of "## The site's policy")."""
    section = guide.read_text().split("## The site's policy", 1)[1]
    return re.search(r"```toml\n(.*?)```", section, flags=re.S).group(1)


def substitute(command: str, replacements: dict[str, str]) -> str:
    """Every occurrence of a key replaced in one pass (the longest key first where two overlap)."""
    pattern = re.compile("|".join(re.escape(old) for old in sorted(replacements, key=len, reverse=True)))
    return pattern.sub(lambda match: replacements[match.group(0)], command)
