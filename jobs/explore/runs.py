"""What the explorer reads from run folders for the runs page: metrics, comparison tables and plots.

A `--run` folder is one training run (it holds `model.json`), a comparison folder (`*.md` tables and one run
folder per model) or an ablation folder (`ablation.md` and one run folder per cell, three levels down at
`<split>/<feature set>/<model>`); `run_folders` finds the runs at any depth. The user pages serve a run's model
through `recommenders.serve.Server`, as `seerec recommend` does.
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


def run_folders(path: Path, marker: str = "metrics.json") -> dict[str, Path]:
    """The run folders at or below `path` that hold `marker`, by their path relative to it ("." for `path`
    itself), shallowest first: one run, a comparison's runs one level down, an ablation's cells three down."""
    return {(folder := found.parent).relative_to(path).as_posix(): folder
            for found in sorted(path.rglob(marker), key=lambda p: (len(p.parts), p)) if found.is_file()}


def read_run_folder(path: Path) -> RunView:
    view = RunView(path.name, path)
    for md in sorted(path.glob("*.md")):
        view.tables[md.name] = markdown_tables(md.read_text(), view.notes)
    runs = run_folders(path)
    view.metrics = {name: flat_metrics(json.loads((folder / "metrics.json").read_text()))
                    for name, folder in runs.items()}
    view.plots = sorted(p.relative_to(path).as_posix()
                        for folder in {path, *runs.values()} for p in folder.glob("*.png"))
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
