"""Write a benchmark's latest table into README.md, between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def update(name: str, table: str, readme: Path = README) -> None:
    """Replace the section's previous figures with these, stamped with when, where and how they were made."""
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}"] +
                       [arg for arg in sys.argv[1:] if arg != "--readme"])
    stamp = (f"`{command}`, {datetime.date.today():%Y-%m-%d}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}:")
    block = f"<!-- bench:{name} -->\n{stamp}\n\n{table.strip()}\n<!-- /bench:{name} -->"
    text = readme.read_text()
    pattern = re.compile(rf"<!-- bench:{name} -->.*?(<!-- /bench:{name} -->|$)", re.S)
    if f"<!-- /bench:{name} -->" not in text:
        pattern = re.compile(rf"<!-- bench:{name} -->")
    new, count = pattern.subn(lambda _: block, text, count=1)
    if not count:
        raise SystemExit(f"README.md has no <!-- bench:{name} --> marker")
    readme.write_text(new)
