"""The docs stay true to the code: the configuration page is current and every relative link resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from jobs.reference import PAGE, main, render

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_configuration_reference_is_current():
    result = subprocess.run([sys.executable, "-m", "jobs.reference", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_reports_a_stale_page_in_one_sentence(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(PAGE.read_text().replace("| `uri` |", "| `url` |"))
    assert main(["--check", "--out", str(stale)]) == 1
    message = capsys.readouterr().out.strip()
    assert message.endswith("is stale: run `python -m jobs.reference` to regenerate it from pipeline/config.py.")
    assert main(["--out", str(stale)]) == 0
    assert stale.read_text() == render()
    assert main(["--check", "--out", str(stale)]) == 0


class Inner(BaseModel):
    # Frames per item,
    # spread evenly.
    frames: int = Field(8, ge=1, le=64)
    mode: Literal["fast", "exact"] | None = None
    """How carefully to work."""


class Outer(BaseModel):
    name: str = Field("x|y", description="What the run is called.")
    tags: list[str] = Field(default_factory=lambda: ["a"])
    inner: Inner = Field(default_factory=Inner)


class Root(BaseModel):
    outer: Outer = Field(default_factory=Outer)


def test_descriptions_come_from_fields_docstrings_or_the_comment_above():
    page = render(Root, "# Test\n")
    assert page.index("## `outer`") < page.index("## `outer.inner`")
    assert "| `name` | `str` | `\"x\\|y\"` | What the run is called. |" in page
    assert '| `tags` | `list[str]` | `["a"]` |  |' in page
    assert "| `frames` | `int, ≥ 1, ≤ 64` | `8` | Frames per item, spread evenly. |" in page
    assert '| `mode` | `"fast" \\| "exact" \\| None` | `null` | How carefully to work. |' in page


def test_every_config_section_is_in_the_page():
    page = PAGE.read_text()
    for section in ("store", "ray", "media", "audio", "ingest", "embed", "embed.text", "embed.image", "embed.audio",
                    "describe", "transcribe", "quantize", "train", "train.data", "compare", "ablate"):
        assert f"## `{section}`" in page


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(ROOT)} -> {target} (no such heading)")
    assert not broken, broken


def _anchors(page: Path) -> set[str]:
    """The ids GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_lancedb_example_of_the_stores_page_runs_on_a_store(tmp_path, monkeypatch):
    """The page's plain-LanceDB query, run as written on a small real store (under `demo-out/store`)."""
    import numpy as np
    import pyarrow as pa

    from pipeline.config import StoreConfig
    from pipeline.schema import catalog_schema, vector_family
    from pipeline.store import ItemStore

    monkeypatch.chdir(tmp_path)
    store = ItemStore(StoreConfig(uri="demo-out/store"))
    store.create_if_missing()
    ids = [f"syn-{i:04d}" for i in range(8)]
    catalog = pa.Table.from_pylist([{"item_id": i, "media_type": "video" if n % 2 else "image", "title": i}
                                    for n, i in enumerate(ids)], schema=catalog_schema())
    store.upsert(catalog)
    family = vector_family("text_vec", 4)
    vectors = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    store.write_family(family, family.rows(pa.array(ids), pa.array(list(vectors), family.value.type), "m",
                                           [None] * 8, source="{title}"))
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "stores.md").read_text(), re.S)
    [example] = [block for block in blocks if "lancedb.connect" in block]
    scope: dict = {}
    exec(example, scope)
    hits = scope["hits"]
    assert list(hits.columns) == ["item_id", "title", "_distance"] and len(hits) == 4
    assert hits["item_id"].iloc[0] == "syn-0001" and abs(hits["_distance"].iloc[0]) < 1e-5  # itself, cosine 0


def test_the_seerec_search_example_of_the_stores_page_runs_on_a_store(tmp_path, monkeypatch):
    """The page's Python search, run as written on a store whose `text_vec` the config's encoder filled."""
    import pyarrow as pa

    from extractors.embed import TextEmbedder, text_model_id
    from pipeline.config import load_config
    from pipeline.schema import catalog_schema, vector_family
    from pipeline.store import ItemStore

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo-out").mkdir()
    (tmp_path / "demo-out" / "config.yaml").write_text("store:\n  uri: demo-out/store\n")
    cfg = load_config("demo-out/config.yaml")
    store = ItemStore(cfg.store)
    store.create_if_missing()
    titles = ["calm blue ocean waves", "ocean surf at dawn", "city traffic at night", "a cat asleep"]
    ids = [f"syn-{i:04d}" for i in range(len(titles))]
    store.upsert(pa.Table.from_pylist([{"item_id": i, "media_type": "video" if n % 3 else "image", "title": t}
                                       for n, (i, t) in enumerate(zip(ids, titles, strict=True))],
                                      schema=catalog_schema()))
    vectors = TextEmbedder(cfg.embed.text).encode(titles)
    family = vector_family("text_vec", vectors.shape[1])
    store.write_family(family, family.rows(pa.array(ids), pa.array(list(vectors), family.value.type),
                                           text_model_id(cfg.embed.text), [None] * len(ids), source="{title}"))
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "stores.md").read_text(), re.S)
    [example] = [block for block in blocks if "text_query_vector" in block]
    scope: dict = {}
    exec(example, scope)
    hits = scope["hits"].to_pylist()
    assert [h["item_id"] for h in hits][:2] == ["syn-0001", "syn-0002"]  # the videos, the surf one nearest
    assert all(h["media_type"] == "video" for h in hits)
