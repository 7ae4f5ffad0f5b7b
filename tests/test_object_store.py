"""Item stores on object storage: every stage against a real S3-compatible server (moto) on 127.0.0.1.

Settings reach Lance either through `store.storage_options` or, with none in the config, through the AWS_*
environment. Concurrent commits are safe because Lance writes each manifest with a put-if-absent
(`If-None-Match: *`), which the first test shows, and the store retries the loser.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from extractors.search import text_query_vector
from jobs.cli import app
from jobs.describe import run_describe
from jobs.embed import run_embed
from jobs.ingest import run_ingest
from jobs.quantize import run_quantize
from jobs.synthetic import make_catalog
from pipeline.config import SeerecConfig, StoreConfig, load_config
from pipeline.schema import KEY, vector_family
from pipeline.store import ItemStore
from recommenders.experiment import run_train
from tests.s3_server import s3_server
from tests.test_store import _run_together, assert_unique, catalog_rows, family_rows, random_vectors

REPO = Path(__file__).resolve().parents[1]

# Another process writing to the same table: it opens the store, says so, waits for "go", then commits.
WRITER = """
import sys
from pipeline.config import StoreConfig
from pipeline.store import ItemStore
from tests.test_store import catalog_rows
store, prefix = ItemStore(StoreConfig.model_validate_json(sys.argv[1])), sys.argv[2]
store.count()
print("ready", flush=True)
sys.stdin.readline()
for batch in range(4):
    store.upsert(catalog_rows([f"{prefix}-{batch}-{i}" for i in range(20)]))
"""


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def set_env(s3, monkeypatch) -> None:
    """Endpoint and credentials in the environment, as a cluster's nodes would have them."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def env_only(s3, monkeypatch):
    set_env(s3, monkeypatch)


def s3_store(s3, prefix: str, **settings) -> StoreConfig:
    return StoreConfig(uri=s3.uri(prefix), storage_options=s3.storage_options, **settings)


def assert_items(store: ItemStore, expected: set[str]) -> None:
    assert store.count() == len(expected)
    assert set(assert_unique(store)) == expected


# ---- commits -----------------------------------------------------------------------------------------------
def test_a_commit_never_overwrites_an_existing_manifest(s3):
    """Lance commits version N+1 by creating its manifest only if absent; a squatter there is left alone."""
    store = ItemStore(s3_store(s3, "squat"))
    store.create_if_missing()
    versions = f"squat/{store.cfg.table}.lance/_versions/"
    manifests = [key for key in s3.keys(versions) if key.endswith(".manifest")]
    latest = min(int(Path(key).stem) for key in manifests)  # names hold u64::MAX - version, zero-padded
    squatter = f"{versions}{latest - 1:020d}.manifest"
    s3.client().put_object(Bucket=s3.bucket, Key=squatter, Body=b"another writer's manifest")
    with pytest.raises((OSError, RuntimeError, ValueError)):
        store.upsert(catalog_rows(["a"]))
    assert s3.client().get_object(Bucket=s3.bucket, Key=squatter)["Body"].read() == b"another writer's manifest"


def test_concurrent_writers_in_processes_and_threads_lose_nothing(s3):
    cfg = s3_store(s3, "concurrent")
    base = ItemStore(cfg)
    base.create_if_missing()
    seed = [f"s{i:02d}" for i in range(60)]
    base.upsert(catalog_rows(seed))
    families = [vector_family(name, 4) for name in ("va", "vb")]
    same_new = [f"n{i:02d}" for i in range(30)]

    def write_family(family):  # a column merge of the new family, then staged flushes merged by one merge_insert
        handle = ItemStore(cfg)
        handle.write_family(family, family_rows(family, seed[:20], random_vectors(20, 4)))
        for start in range(20, len(seed), 20):
            rows = family_rows(family, seed[start:start + 20], random_vectors(20, 4))
            handle.stage_family(family, rows, "f" * 32)
        handle.commit_staged(family)
        assert handle.staging_tables(family.name) == []

    writer = subprocess.Popen([sys.executable, "-c", WRITER, cfg.model_dump_json(), "p"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        errors = _run_together(*[lambda f=f: write_family(f) for f in families],
                               *[lambda n=n: ItemStore(cfg).upsert(catalog_rows(same_new, title=[f"w{n}"] * 30))
                                 for n in range(3)])
        assert writer.wait(timeout=180) == 0
    finally:
        writer.kill()
    assert errors == []
    from_process = {f"p-{batch}-{i}" for batch in range(4) for i in range(20)}
    assert_items(base, set(seed) | set(same_new) | from_process)
    for family in families:
        assert base.count(f"{family.name} IS NOT NULL") == len(seed), f"{family.name} lost a write"
    assert len(pc.unique(base.scan(["title"], "`item_id` LIKE 'n%'")["title"])) == 1  # one writer's batch won


def test_dynamodb_commit_store(s3):
    """`s3+ddb://` records each version in DynamoDB: the option for S3-compatible stores without put-if-absent."""
    s3.client("dynamodb").create_table(
        TableName="seerec-commits", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "base_uri", "KeyType": "HASH"}, {"AttributeName": "version", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "base_uri", "AttributeType": "S"},
                              {"AttributeName": "version", "AttributeType": "N"}])
    cfg = StoreConfig(uri=f"s3+ddb://{s3.bucket}/ddb?ddbTableName=seerec-commits",
                      storage_options={**s3.storage_options, "dynamodb_endpoint": s3.endpoint})
    store = ItemStore(cfg)
    store.create_if_missing()
    errors = _run_together(*[lambda p=p: ItemStore(cfg).upsert(catalog_rows([f"{p}{i}" for i in range(10)]))
                             for p in "abc"])
    assert errors == []
    assert_items(store, {f"{p}{i}" for p in "abc" for i in range(10)})
    records = s3.client("dynamodb").scan(TableName="seerec-commits")["Items"]
    assert len(records) == len(store.versions())


def test_yaml_storage_options_reach_lance_as_text(s3, tmp_path):
    """`allow_http: true` and `download_retry_count: 5` are a bool and a number in YAML; object stores want text."""
    options = {**s3.storage_options, "allow_http": True, "download_retry_count": 5}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"uri": s3.uri("yaml"), "storage_options": options}}))
    cfg = load_config(path)
    assert cfg.store.storage_options == {**s3.storage_options, "allow_http": "true", "download_retry_count": "5"}
    store = ItemStore(cfg.store)
    store.create_if_missing()
    store.upsert(catalog_rows(["a", "b"]))
    assert_items(ItemStore(cfg.store), {"a", "b"})


# ---- maintenance, versions and the CLI with credentials only in the environment ------------------------------
def test_index_versions_restore_and_cli_with_env_credentials(s3, env_only):
    cfg = StoreConfig(uri=s3.uri("lifecycle"), index_min_rows=256)
    store = ItemStore(cfg)
    store.create_if_missing()
    ids = [f"i{i:03d}" for i in range(300)]
    store.upsert(catalog_rows(ids))
    before_vectors = store.table.version
    family = vector_family("vec", 8)
    vectors = random_vectors(300, 8)
    store.write_family(family, family_rows(family, ids, vectors))
    store.finalize(["vec"])
    tag = store.tag_version("embed", "model-a", column="vec")
    assert {tuple(index.columns) for index in store.table.list_indices()} >= {(KEY,), ("vec",)}
    assert store.search_vector("vec", vectors[7], k=3)[KEY][0].as_py() == "i007"

    uri = f"store.uri={cfg.uri}"
    runner = CliRunner()
    info = runner.invoke(app, ["store", "info", uri])
    assert info.exit_code == 0 and "300 items" in info.output, info.output
    listed = runner.invoke(app, ["store", "versions", uri])
    assert listed.exit_code == 0 and str(before_vectors) in listed.output
    assert ItemStore(cfg).versions()[-1]["tags"] == tag and ItemStore(cfg).tags()[0]["model"] == "model-a"
    restored = runner.invoke(app, ["store", "restore", str(before_vectors), uri])
    assert restored.exit_code == 0, restored.output
    again = ItemStore(cfg)
    assert "vec" not in again.schema.names and again.count() == 300
    assert again.versions()[-1]["version"] > before_vectors  # a restore is a new commit; history stays


# ---- manifests on object storage -------------------------------------------------------------------------
MANIFEST = (b"item_id,media_uri,media_type,title\n"
            b"a,videos/a.mp4,video,in the manifest's prefix\n"
            b"b,s3://seerec-test/elsewhere/b.jpg,image,outside it\n"
            b"c,/etc/hostname,image,a local file\n"
            b"d,,text,text only\n"
            b"e,./covers/../../../secret/e.jpg,image,up and out of the prefix\n")


def test_ingest_reads_an_s3_manifest_through_the_cli(s3, tmp_path, monkeypatch):
    """`seerec ingest --path s3://...`: read with the store's storage_options (an S3 store) or, for a local store,
    the AWS_* environment; media resolve against the manifest's prefix, which is also the default media root."""
    s3.client().put_object(Bucket=s3.bucket, Key="catalogs/shop/items.csv", Body=MANIFEST)
    manifest = s3.uri("catalogs/shop/items.csv")
    config = tmp_path / "s3.yaml"
    store = {"uri": s3.uri("manifest-store"), "storage_options": s3.storage_options}
    config.write_text(yaml.safe_dump({"store": store}))
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "-c", str(config), "--path", manifest])
    assert result.exit_code == 0, result.output
    rows = {r["item_id"]: r for r in ItemStore(load_config(config).store).scan().to_pylist()}
    assert rows["a"]["media_uri"] == s3.uri("catalogs/shop/videos/a.mp4") and rows["a"]["ingest_error"] is None
    assert rows["b"]["media_uri"] is None and "is outside the media roots (s3://seerec-test/catalogs/shop/)" \
        in rows["b"]["ingest_error"]
    assert rows["c"]["media_uri"] is None and "/etc/hostname is outside the media roots" in rows["c"]["ingest_error"]
    assert rows["d"]["ingest_error"] is None and rows["d"]["ingest_source"] == "manifest:items.csv"
    assert rows["e"]["media_uri"] is None and "has a '..' segment in its path" in rows["e"]["ingest_error"]

    set_env(s3, monkeypatch)  # a local store: the manifest's endpoint and keys come from the environment
    local = runner.invoke(app, ["ingest", f"store.uri={tmp_path / 'local-store'}", "--path", manifest])
    assert local.exit_code == 0, local.output
    assert ItemStore(StoreConfig(uri=str(tmp_path / "local-store"))).count() == 5


@pytest.mark.parametrize(("path", "message"), [
    ("catalogs/none.csv", "error: manifest s3://seerec-test/catalogs/none.csv does not exist"),
    ("catalogs", "error: manifest s3://seerec-test/catalogs is a folder"),
    ("catalogs/items.txt", "error: manifest s3://seerec-test/catalogs/items.txt must be .parquet, .csv or .jsonl"),
])
def test_a_bad_s3_manifest_path_is_one_sentence(s3, tmp_path, env_only, path, message):
    for key in ("catalogs/shop/items.csv", "catalogs/items.txt"):
        s3.client().put_object(Bucket=s3.bucket, Key=key, Body=MANIFEST)
    result = CliRunner().invoke(app, ["ingest", f"store.uri={tmp_path / 'store'}", "--path", s3.uri(path)])
    assert result.exit_code == 2 and result.output.startswith(message), result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "store").exists()


def test_an_unreachable_bucket_or_a_dataset_folder_on_s3_is_one_sentence(s3, tmp_path, env_only):
    store = f"store.uri={tmp_path / 'store'}"
    missing = CliRunner().invoke(app, ["ingest", store, "--path", "s3://no-such-bucket/items.csv"])
    assert missing.exit_code == 2 and "error: manifest s3://no-such-bucket/items.csv" in missing.output
    folder = CliRunner().invoke(app, ["ingest", store, "--source", "microlens", "--path", s3.uri("microlens")])
    assert folder.exit_code == 2 and folder.output.startswith(
        "error: microlens reads a local dataset folder, not s3://seerec-test/microlens; only a manifest"), folder.output


# ---- every stage -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_stage_on_s3(s3, make_config, tiny_qwen, ray_local, tmp_path, monkeypatch):
    catalog = make_catalog(tmp_path / "syn", n_items=8, n_users=40, seed=11)
    items = set(pq.read_table(catalog.manifest, columns=[KEY])[KEY].to_pylist())
    cfg: SeerecConfig = make_config(
        store={"uri": s3.uri("pipeline"), "storage_options": s3.storage_options},
        ingest={"source": "manifest", "path": str(catalog.manifest)},
        describe={"model": tiny_qwen, "items_per_batch": 4, "where": ["media_type = image"],
                  "generation": {"max_new_tokens": 4}},
        quantize={"levels": 2, "codebook_size": 4, "out_dir": str(tmp_path / "tokenizer")},
        train={"model": "two_tower", "features": ["text_vec"], "epochs": 2, "name": "tt", "progress": False,
               "cpu_threads": 1, "runs_dir": str(tmp_path / "runs"), "export_column": "cf_vec",
               "two_tower": {"dim": 8, "hidden": 16, "negatives": 4},
               "data": {"path": str(catalog.interactions)}},
    )
    store = ItemStore(cfg.store)

    ingested = run_ingest(cfg)
    assert (ingested.extra["inserted"], ingested.failed) == (8, 0)
    assert_items(store, items)
    after_ingest = store.table.version

    text, media = run_embed(cfg)
    assert (text.done, media.done, media.failed) == (8, 8, 0)
    described = run_describe(cfg)
    images = store.count("media_type = 'image'")
    assert (described.done, described.failed) == (images, 0) and images > 0
    quantized = run_quantize(cfg)
    assert quantized.done == 8
    result = run_train(cfg)
    assert result.metrics["test"] and (tmp_path / "runs" / "tt" / "model.pt").is_file()
    assert_items(store, items)
    for column in ("text_vec", "clip_vec", "semantic_id", "cf_vec"):
        assert store.count(f"`{column}` IS NOT NULL") == 8, column
    assert store.count("description IS NOT NULL") == images

    title = store.get([sorted(items)[0]], ["title"])["title"][0].as_py()
    hits = store.search_vector("text_vec", text_query_vector(store, cfg, "text_vec", title), k=3)
    assert hits[KEY][0].as_py() == sorted(items)[0]
    assert store.neighbours(sorted(items)[1], "clip_vec", k=3).num_rows == 3

    # The same store with no storage_options: Lance takes endpoint and keys from the environment.
    set_env(s3, monkeypatch)
    env_cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"storage_options": {}})})
    again = run_ingest(env_cfg)
    assert (again.extra["inserted"], again.extra["updated"], again.extra["store_rows"]) == (0, 8, 8)
    assert_items(ItemStore(env_cfg.store), items)

    store.restore(after_ingest)
    restored = ItemStore(cfg.store)
    assert "text_vec" not in restored.schema.names
    assert_items(restored, items)
