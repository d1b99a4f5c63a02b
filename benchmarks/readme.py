"""Copy the committed benchmark reports into README.md, so its numbers are never typed by hand.

    python -m benchmarks.readme

Each README block between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` is replaced by the
report ``benchmarks/results/NAME/report.md`` (its first heading dropped, other headings demoted, and
relative image links rewritten to point into the results folder).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report_block(name: str) -> str:
    folder = Path("benchmarks/results") / name
    report = ROOT / folder / "report.md"
    if not report.is_file():
        return f"_not run yet: `{folder / 'report.md'}` is missing_"
    lines = report.read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out = []
    for line in lines:
        if line.startswith("#"):
            line = "#" + line  # demote: the README's own section is the parent
        line = re.sub(r"!\[([^\]]*)\]\((?!http)([^)]+)\)", lambda m: f"![{m[1]}]({(folder / m[2]).as_posix()})", line)
        out.append(line)
    return "\n".join(out).strip()


def update(readme: Path = ROOT / "README.md") -> list[str]:
    text = readme.read_text()
    names = re.findall(r"<!-- bench:([\w-]+) -->", text)
    for name in names:
        pattern = re.compile(rf"(<!-- bench:{name} -->).*?(<!-- /bench:{name} -->)", re.S)
        text = pattern.sub(lambda m, n=name: f"{m[1]}\n{report_block(n)}\n{m[2]}", text)
    readme.write_text(text)
    return names


if __name__ == "__main__":
    print("updated README blocks:", ", ".join(update()))
