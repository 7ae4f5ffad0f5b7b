"""What the explorer reads from run folders for the runs page: metrics, comparison tables and plots.

A `--run` folder is either one training run (it holds `model.json`) or a comparison/ablation folder (it holds
`*.md` tables and one run folder per entry). The user pages serve a run's model through
`recommenders.serve.Server`, as `seerec recommend` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import SeerecError


class RunError(SeerecError):
    """A run the explorer was not given, or a request for one it cannot answer; one sentence."""


@dataclass
class Table:
    """A Markdown pipe table, split into cells (rendered by the template, so every cell is escaped)."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class RunView:
    """One --run folder as the runs page shows it."""

    name: str
    path: Path
    notes: list[str] = field(default_factory=list)  # the non-table lines of its .md files
    tables: dict[str, list[Table]] = field(default_factory=dict)  # file name -> its tables
    metrics: dict[str, dict] = field(default_factory=dict)  # run (relative) -> flat metrics
    plots: list[str] = field(default_factory=list)  # PNG files, relative to the folder


def read_run_folder(path: Path) -> RunView:
    view = RunView(path.name, path)
    for md in sorted(path.glob("*.md")):
        view.tables[md.name] = markdown_tables(md.read_text(), view.notes)
    for metrics in sorted([path / "metrics.json", *path.glob("*/metrics.json")]):
        if metrics.is_file():
            name = str(metrics.parent.relative_to(path)) if metrics.parent != path else "."
            view.metrics[name] = flat_metrics(json.loads(metrics.read_text()))
    view.plots = sorted(str(p.relative_to(path)) for p in [*path.glob("*.png"), *path.glob("*/*.png")])
    return view


def markdown_tables(text: str, notes: list[str]) -> list[Table]:
    """The pipe tables of a Markdown file; its other non-empty lines go to `notes`."""
    tables: list[Table] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            tables.append(Table(block[0], body))
            block = []
        if line.strip():
            notes.append(line.strip())
    return tables


def flat_metrics(metrics: dict) -> dict:
    """The scalar entries of metrics.json, nested keys joined by '.', e.g. test.recall@10; history left out."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif prefix != "history" and not isinstance(value, list):
            flat[prefix] = value

    walk("", metrics)
    return flat
