"""docs/troubleshooting.md is true: each bad input below, given to the `seerec` CLI, gets the exit code and the
exact message the page's table shows for it (an `…` in the page stands for a part that depends on the machine).

The cases that need a running stage, a cluster or a browser are tested where their behaviour is (test_ingest,
test_media, test_submit, test_explore, ...); these are the ones the CLI answers before any work starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from extractors.semantic_ids import make_tokenizer
from jobs.cli import app
from pipeline.config import StoreConfig
from pipeline.schema import catalog_schema, vector_family
from pipeline.store import ItemStore
from tests.helpers import REPO

PAGE = (REPO / "docs" / "troubleshooting.md").read_text()
BOX = re.compile(r"[│╭╮╰╯─]")


def documented(bad_input: str) -> tuple[str, str]:
    """The message and the exit cell of the table row whose first cell is `bad_input`."""
    [row] = [line for line in PAGE.splitlines() if line.startswith(f"| {bad_input} | ")]
    message, exit_cell = row.removeprefix(f"| {bad_input} | ").removesuffix(" |").rsplit(" | ", 1)
    return message.removeprefix("`").removesuffix("`"), exit_cell


def assert_says(output: str, message: str) -> None:
    """`output` holds the message's parts, in order, with any whitespace (and a usage box's frame) between."""
    flat = " ".join(BOX.sub(" ", output).split())
    position = 0
    for part in (" ".join(p.split()) for p in message.split("…")):
        found = flat.find(part, position)
        assert found >= 0, f"{part!r} is not in what seerec printed: {flat!r}"
        position = found + len(part)


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def small_store(uri: str) -> None:
    store = ItemStore(StoreConfig(uri=uri))
    store.create_if_missing()
    ids = [f"i{n}" for n in range(40)]
    store.upsert(pa.Table.from_pylist([{"item_id": i, "media_type": "image", "title": i} for i in ids],
                                      schema=catalog_schema()))
    family = vector_family("text_vec", 8)
    vectors = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    store.write_family(family, family.rows(pa.array(ids), pa.array(list(vectors), family.value.type), "m",
                                           [None] * 40, source="{title}"))


def saved_tokenizer(folder: str, damage: str) -> None:
    vectors = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    make_tokenizer("rkmeans", levels=2, codebook_size=4, columns=["text_vec"]).fit(vectors).save(folder)
    config = Path(folder) / "tokenizer.json"
    if damage == "weights":
        (Path(folder) / "tokenizer.safetensors").write_bytes(b"not safetensors" * 4)
    elif damage == "key":
        meta = json.loads(config.read_text())
        meta["params"]["nope"] = 1
        config.write_text(json.dumps(meta))
    else:
        config.write_text("{not json")


def s3rec_folder(folder: Path, damage: str) -> None:
    """An S3-Rec folder that is wrong: two categories, or attribute 1 on 17 items where datamaps counts 2627."""
    folder.mkdir()
    items = {str(i): [1] for i in range(1, 18)}
    (folder / "datamaps.json").write_text(json.dumps({
        "id2item": {i: f"B{i}" for i in items}, "id2attribute": {"1": "Makeup"}, "attributeid2num": {"1": 2627}}))
    categories = ["Beauty", "Toys"] if damage == "s3rec-two" else ["Sports_and_Outdoors"]
    for category in categories:
        (folder / f"{category}_item2attributes.json").write_text(json.dumps(items))


QUANTIZE = ["quantize", "--assign-only", "store.uri=st", "quantize.out_dir=tok", "quantize.columns=[text_vec]"]
CASES = [
    # (the page's bad-input cell, the command's arguments, what to set up first)
    ("`'embed.text.template={title'`", ["embed", "store.uri=st", "embed.text.template={title"], "store"),
    ("`'embed.text.template=title}'`", ["embed", "store.uri=st", "embed.text.template=title}"], "store"),
    ("`'embed.text.template={title!z}'`", ["embed", "store.uri=st", "embed.text.template={title!z}"], "store"),
    ("`media.roots=[../x/..]`", ["config", "media.roots=[../x/..]"], None),
    ("`media_type in (video`", ["search", "store.uri=st", "--where", "media_type in (video", "--text", "x"], "store"),
    ("`media_type in 'video' image`", ["search", "store.uri=st", "--where", "media_type in 'video' image", "--text",
                                        "x"], "store"),
    ("`--path catalog` (a folder) with `--source manifest`", ["ingest", "--path", "catalog"], "catalog"),
    ("`--path /dev/zero` (a device, a FIFO)", ["ingest", "--path", "/dev/zero"], None),
    ("`--source s3rec --path items.csv` (a file where a dataset folder is needed)",
     ["ingest", "--source", "s3rec", "--path", "items.csv"], "items.csv"),
    ("`describe.model=./nope` (no such folder)", ["describe", "describe.model=./nope"], None),
    ("`embed.text.model=/nope`", ["embed", "embed.text.model=/nope"], None),
    ("`describe.model=/tmp` (a folder that is not a checkpoint)", ["describe", "describe.model=/tmp"], None),
    ("`embed.image.model=ViT-Nope`", ["embed", "embed.image.model=ViT-Nope"], None),
    ("`embed.image.pretrained=nope`", ["embed", "embed.image.pretrained=nope"], None),
    ("`describe_audio.model=./nope`", ["describe-audio", "describe_audio.model=./nope"], None),
    ("`transcribe.model=./nope`", ["transcribe", "transcribe.model=./nope"], None),
    ("`embed.audio.model=./nope` (with `embed.audio.enabled=true`)",
     ["embed", "embed.audio.enabled=true", "embed.audio.model=./nope"], None),
    ("`seerec submit ingest --no-such-flag` (rejected before connecting)", ["submit", "ingest", "--no-such-flag"],
     "ray"),
    ("`seerec submit embed --forse`", ["submit", "embed", "--forse"], "ray"),
    ("`seerec submit` with `RAY_ADDRESS` set to a dashboard that is down (the address is taken from "
     "`RAY_API_SERVER_ADDRESS`, then `RAY_ADDRESS`)", ["submit", "ingest"], "ray"),
    ("`seerec make-test-model --kind bert OUT`", ["make-test-model", "--kind", "bert", "OUT"], None),
    ("`seerec search -k 0 …` (or a negative k; `ItemStore.search_vector` with k=0 raises `a search returns at least "
     "1 item, not k=0`)", ["search", "-k", "0", "--text", "x"], None),
    ("`--host 0.0.0.0` without `--token` or `SEEREC_EXPLORE_TOKEN`", ["explore", "--host", "0.0.0.0"], None),
    ("`seerec store info store.uri=/nope/x` (no store there; also `search`)",
     ["store", "info", "store.uri=/nope/x"], None),
    ("`seerec ingest store.uri=items.csv` (a file)", ["ingest", "--path", "m.csv", "store.uri=items.csv"],
     "items.csv"),
    ("`seerec search --text …` with a config whose encoder is not the one that filled the column",
     ["search", "store.uri=st", "--text", "x"], "store"),
    ("`seerec search --columns item_id,nope`", ["search", "store.uri=st", "--item", "i0", "--columns", "item_id,nope"],
     "store"),
    ("`seerec search --where \"nope = 1\"` (reported before any model loads)",
     ["search", "store.uri=st", "--where", "nope = 1", "--text", "x"], "store"),
    ("`--source s3rec` on a `<Category>_item2attributes.json` whose attribute numbers do not follow its "
     "`datamaps.json`", ["ingest", "--source", "s3rec", "--path", "data"], "s3rec-numbering"),
    ("`--source s3rec` on a folder with two categories", ["ingest", "--source", "s3rec", "--path", "data"],
     "s3rec-two"),
    ("`--source recbole` on a file whose header is not `name:type`",
     ["ingest", "--source", "recbole", "--path", "items.csv"], "items.csv"),
    ("`seerec quantize --assign-only` with a corrupted `tokenizer.safetensors`", QUANTIZE, "weights"),
    ("`seerec quantize --assign-only` with an unknown key in `tokenizer.json`'s `params`", QUANTIZE, "key"),
    ("`seerec quantize --assign-only` with a `tokenizer.json` that is not JSON", QUANTIZE, "json"),
]


@pytest.mark.parametrize(("bad_input", "args", "setup"), CASES, ids=[c[0][:60] for c in CASES])
def test_the_page_shows_what_seerec_says(here, bad_input, args, setup):
    message, exit_cell = documented(bad_input)
    if setup == "store":
        small_store("st")
    elif setup == "catalog":
        (here / "catalog").mkdir()
    elif setup == "items.csv":
        (here / "items.csv").write_text("item_id,media_uri,media_type,title\n")
        (here / "m.csv").write_text("item_id,media_uri,media_type,title\na,,image,x\n")
    elif setup in ("s3rec-numbering", "s3rec-two"):
        s3rec_folder(here / "data", setup)
    elif setup in ("weights", "key", "json"):
        small_store("st")
        saved_tokenizer("tok", setup)
    # Nothing listens on port 9 (discard): a job submission must fail to connect, after checking its flags.
    env = {"RAY_ADDRESS": "http://127.0.0.1:9"} if setup == "ray" else {}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2 and exit_cell in ("exit 2", "2"), (result.exit_code, exit_cell, result.output)
    assert_says(result.stderr, message)
    assert "Traceback" not in result.output



SEEREC = str(Path(sys.executable).with_name("seerec"))


@pytest.mark.parametrize("model", ["popularity", "two_tower"])
def test_train_on_a_missing_store_creates_no_folder_and_says_what_the_page_says(here, model):
    """Reading never creates: an ID-only model trains over the interactions' items with a warning, a features
    model stops with one sentence; neither leaves a store folder (a typo in store.uri would otherwise become an
    empty store that later runs take for the real one)."""
    rows = {"popularity": ("`seerec train --model popularity store.uri=/nope/x` (no store there; any model that "
                           "reads only item IDs)", 0, []),
            "two_tower": ("`seerec train --model two_tower train.features=[text_vec] store.uri=/nope/x` (no store "
                          "there)", 2, ["train.features=[text_vec]"])}
    bad_input, code, extra = rows[model]
    message, exit_cell = documented(bad_input)
    (here / "Beauty.txt").write_text("".join(f"{u} {' '.join(str(1 + (u + i) % 7) for i in range(5))}\n"
                                             for u in range(1, 13)))
    wide = {**os.environ, "COLUMNS": "400"}  # log lines unwrapped
    result = subprocess.run([SEEREC, "train", "--model", model, "--data", "Beauty.txt", *extra, "store.uri=nope/x",
                             "train.epochs=1"], capture_output=True, text=True, cwd=here, env=wide, timeout=600)
    assert result.returncode == code and exit_cell.startswith("exit 2" if code else "accepted"), result.stderr
    assert_says(result.stdout + result.stderr, message.replace("/nope/x", "nope/x"))
    assert not (here / "nope").exists() and "Traceback" not in result.stdout + result.stderr


MEDIA_ROWS = ["/etc/shadow", "../../../../etc/shadow", "file:///etc/hostname", "http://169.254.169.254/latest/meta-data/",
              "s3://bucket/videos/../secret/d.mp4"]


def test_the_page_shows_what_ingest_records_and_warns_per_row(here):
    """The per-row cases, from one real ingest of one manifest: each media_uri outside the roots gets the page's
    `ingest_error` (the catalog's folder standing for /srv/catalog), and a repeated item_id the page's warning."""
    up = "../" * (len(here.resolve().parts) - 1)  # from this folder to /, however deep the test's folder is
    uris = [uri.replace("../../../../", up) for uri in MEDIA_ROWS]
    # Row 1 is the header: row 2 is `ok`, rows 3-7 the media rows, row 8 `ok` again.
    rows = ["ok,,text,kept", *(f"m{n},{uri},video,m{n}" for n, uri in enumerate(uris, start=3)), "ok,,text,again"]
    (here / "items.csv").write_text("item_id,media_uri,media_type,title\n" + "\n".join(rows) + "\n")
    result = CliRunner().invoke(app, ["ingest", "--path", "items.csv", "store.uri=st"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    message, exit_cell = documented("the same `item_id` on rows 2 and 8")
    assert exit_cell.startswith("per row: row 8 is rejected")
    assert_says(result.output, message)
    errors = dict(zip(*ItemStore(StoreConfig(uri="st")).scan(["item_id", "ingest_error"]).to_pydict().values(),
                      strict=True))
    assert errors["ok"] is None
    for n, documented_uri in enumerate(MEDIA_ROWS, start=3):
        message, exit_cell = documented(f"`{documented_uri}`")
        expected = message.replace("/srv/catalog", str(here.resolve())).replace("../../../../", up)
        assert errors[f"m{n}"] == expected and exit_cell == "per item (`ingest_error`)", (errors[f"m{n}"], expected)


def test_a_short_recbole_row_is_rejected_with_the_pages_warning(here):
    (here / "x.item").write_text("item_id:token\ttitle:token_seq\na\tfirst\nb\n")
    result = CliRunner().invoke(app, ["ingest", "--source", "recbole", "--path", "x.item", "store.uri=st"],
                                env={"COLUMNS": "400"})
    message, exit_cell = documented("a RecBole row with fewer fields than its header")
    assert result.exit_code == 0 and exit_cell.startswith("per row (rejected"), result.output
    assert_says(result.output, message)
    assert ItemStore(StoreConfig(uri="st")).scan(["item_id"])["item_id"].to_pylist() == ["a"]


def test_an_item_with_no_text_is_a_recorded_skip_search_names(here):
    """The "outcomes that are not errors" row: the skip reason the embedder records, and what search says."""
    from extractors.embed import NO_TEXT

    [row] = [line for line in PAGE.splitlines() if line.startswith("| an item whose text template renders to nothing")]
    assert f'`text_vec_skipped = "{NO_TEXT}"`' in row
    store = ItemStore(StoreConfig(uri="st"))
    store.create_if_missing()
    store.upsert(pa.Table.from_pylist([{"item_id": i, "media_type": "text", "title": i} for i in ("a", "b")],
                                      schema=catalog_schema()))
    family = vector_family("text_vec", 2, skippable=True)
    store.write_family(family, family.rows(pa.array(["a", "b"]), pa.array([[1.0, 0.0], None], family.value.type),
                                           "m", [None, None], source="{title}", skipped=[None, NO_TEXT]))
    result = CliRunner().invoke(app, ["search", "store.uri=st", "--item", "b"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert_says(result.stderr, row.split("`seerec search --item` on it: `", 1)[1].split("`", 1)[0])
