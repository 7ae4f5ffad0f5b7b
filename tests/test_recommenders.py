"""Recommenders: loaders, splits, features from the store, every model on a learnable pattern, runs, CLI.

The synthetic data: 60 items in 6 topics of 10; each topic has a hidden cyclic order. A user picks one
topic and walks its order from a random start. Content vectors encode the topic (plus noise). So the next
item is predictable from the last one (sequential models), the topic from the history (collaborative and
content models), and an item never seen in training from its content (two-tower, cold start).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
import yaml

from pipeline.config import Section, StoreConfig, validate_config
from pipeline.schema import KEY, TIMESTAMP, catalog_schema, vector_family, vector_type
from pipeline.store import ItemStore
from recommenders.base import Recommender, sequence_batches
from recommenders.data import (
    RecommenderError,
    build_interactions,
    cold_start,
    leave_one_out,
    load_frame,
    load_interactions,
    temporal,
)
from recommenders.evaluate import evaluate
from recommenders.experiment import prepare_data, run_compare, run_train
from recommenders.features import load_item_features
from recommenders.runs import load_run
from recommenders.train import WeightAverage, _schedule, build_model, fit

N_ITEMS, N_TOPICS, DIM = 60, 6, 16
FAST = {"progress": False, "eval_batch_size": 512, "patience": 3, "cpu_threads": 1}


def synthetic_frame(n_users: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(np.arange(t, N_ITEMS, N_TOPICS)) for t in range(N_TOPICS)]
    rows = []
    for u in range(n_users):
        order = orders[rng.integers(N_TOPICS)]
        start, length = rng.integers(len(order)), rng.integers(5, 9)
        rows += [(f"u{u}", str(order[(start + t) % len(order)]), 1000 * u + t) for t in range(length)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def topic_vectors(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((N_TOPICS, DIM))
    return (topics[np.arange(N_ITEMS) % N_TOPICS] + 0.1 * rng.standard_normal((N_ITEMS, DIM))).astype(np.float32)


def make_store(path: Path, vectors: np.ndarray | None = None, column: str = "text_vec",
               ids: list[str] | None = None) -> ItemStore:
    store = ItemStore(StoreConfig(uri=str(path)))
    store.create_if_missing()
    ids = ids or [str(i) for i in range(N_ITEMS)]
    now = datetime(2024, 6, 1, tzinfo=UTC)
    store.upsert(pa.Table.from_pylist([{"item_id": i, "media_type": "text", "title": f"item {i}",
                                        "ingest_source": "test", "ingested_at": now} for i in ids],
                                      schema=catalog_schema()))
    if vectors is not None:
        family = vector_family(column, vectors.shape[1])
        n = len(ids)
        store.write_family(family, pa.table({
            KEY: ids, column: pa.array([list(map(float, v)) for v in vectors], vector_type(vectors.shape[1])),
            family.model_column: ["test"] * n, family.time_column: pa.array([now] * n, TIMESTAMP),
            family.error_column: pa.nulls(n, pa.string()), f"{column}_source": ["{title}"] * n}))
    return store


@pytest.fixture(scope="module")
def data():
    return build_interactions(synthetic_frame())


@pytest.fixture(scope="module")
def split(data):
    return leave_one_out(data)


def train_config(model: str, **train):
    return validate_config({"train": {"model": model, "epochs": 20, "batch_size": 64, "lr": 5e-3,
                                      **FAST, **train}}).train


def trained(model: str, split, features=None, **train):
    tcfg = train_config(model, **train)
    net = build_model(tcfg, split.n_users, split.n_items, features)
    fit(net, split, tcfg)
    return net, evaluate(net, split.test).metrics


# ---- loaders and splits ------------------------------------------------------------------------------
def test_loaders_read_every_format_into_the_same_structure(tmp_path):
    (tmp_path / "Beauty.txt").write_text("1 3 1 2\n2 2 3 4\n")
    (tmp_path / "Sci.inter.json").write_text(json.dumps({"0": [2, 0, 1], "1": [1, 2, 3]}))
    pairs = "user,item,timestamp\n1,3,5\n1,1,6\n1,2,7\n2,4,9\n2,2,1\n2,3,2\n"
    (tmp_path / "MicroLens-100k_pairs.csv").write_text(pairs)
    frame = pd.DataFrame({"user_id": ["1", "1", "1", "2", "2", "2"], "item_id": ["2", "1", "3", "3", "4", "2"],
                          "timestamp": [7, 6, 5, 2, 9, 1]})
    frame.to_parquet(tmp_path / "inter.parquet")
    frame.to_csv(tmp_path / "inter.csv", index=False)
    rows = "".join(f"{u}\t{i}\t{t}\n" for u, i, t in frame.itertuples(index=False))
    (tmp_path / "beauty.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows)
    expected = {"1": ["3", "1", "2"], "2": ["2", "3", "4"]}
    for name in ("Beauty.txt", "MicroLens-100k_pairs.csv", "inter.parquet", "inter.csv", "beauty.inter"):
        data = load_interactions(tmp_path / name)
        got = {u: [data.item_ids[i] for i in s] for u, s in zip(data.user_ids, data.sequences, strict=True)}
        assert got == expected, name
    sci = load_interactions(tmp_path / "Sci.inter.json")
    assert [list(sci.item_ids[s]) for s in sci.sequences] == [["2", "0", "1"], ["1", "2", "3"]]
    assert list(sci.item_ids) == ["0", "1", "2", "3"]  # numeric order
    with pytest.raises(RecommenderError, match="does not exist"):
        load_frame(tmp_path / "nope.csv")
    (tmp_path / "bad.inter").write_text("session:token\titem_id:token\n1\t2\n")
    with pytest.raises(RecommenderError, match="no 'user_id' field; a RecBole .inter file needs"):
        load_frame(tmp_path / "bad.inter")
    (tmp_path / "empty.csv").write_text("user_id,item_id,timestamp\n")
    with pytest.raises(RecommenderError, match="no interactions"):
        load_frame(tmp_path / "empty.csv")


def test_store_join_reports_missing_items_and_keeps_uninteracted_items():
    frame = pd.DataFrame({"user_id": ["a"] * 4, "item_id": ["1", "2", "9", "3"]})
    data = build_interactions(frame, item_universe=["1", "2", "3", "4"])
    assert data.report["missing_from_store"] == 1 and data.report["missing_items"] == 1
    assert list(data.item_ids) == ["1", "2", "3", "4"] and data.sequences[0].tolist() == [0, 1, 2]
    with pytest.raises(RecommenderError, match="no interaction names an item of the store"):
        build_interactions(frame, item_universe=["x"])


def test_short_users_stop_with_one_sentence_or_are_dropped():
    frame = pd.DataFrame({"user_id": ["a", "a", "a", "b", "b"], "item_id": ["1", "2", "3", "1", "2"]})
    with pytest.raises(RecommenderError) as err:
        build_interactions(frame)
    assert str(err.value).startswith("1 users have fewer than 3 interactions") and "\n" not in str(err.value)
    data = build_interactions(frame, short_users="drop")
    assert data.n_users == 1 and data.report["dropped_short_users"] == 1
    with pytest.raises(RecommenderError, match="empty"):
        build_interactions(frame.iloc[:0])


def test_leave_one_out(data, split):
    seq = data.sequences[0]
    assert split.train[0].tolist() == seq[:-2].tolist()
    assert split.valid.targets[0] == seq[-2] and split.valid.histories[0].tolist() == seq[:-2].tolist()
    assert split.test.targets[0] == seq[-1] and split.test.histories[0].tolist() == seq[:-1].tolist()
    assert len(split.valid) == len(split.test) == data.n_users


def test_model_weights_start_from_the_seed_not_from_what_ran_before(split):
    tcfg = validate_config({"train": {"model": "sasrec", "seed": 3}}).train
    first = build_model(tcfg, split.n_users, split.n_items, None).state_dict()
    torch.rand(1000)  # e.g. an earlier model of the same compare run
    second = build_model(tcfg, split.n_users, split.n_items, None).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_length_buckets_keep_every_user_once_and_cut_padding():
    rng = np.random.default_rng(0)
    train = [np.arange(n) for n in rng.choice([2, 3, 4, 50], size=2000, p=[0.4, 0.3, 0.2, 0.1])] + [np.arange(1)]
    plain = list(sequence_batches(train, 20, 16, np.random.default_rng(1), torch.device("cpu")))
    bucketed = list(sequence_batches(train, 20, 16, np.random.default_rng(1), torch.device("cpu"), True))
    for batches in (plain, bucketed):
        users = np.concatenate([b["users"].numpy() for b in batches])
        assert sorted(users.tolist()) == list(range(2000))  # the one-item user has no target and is left out
        for b in batches:
            assert b["inputs"].shape[1] <= 20
            assert b["targets"][0, -1] == train[b["users"][0]][-1]
        # `positions` is the epoch's mean target count per user times the batch's users
        mean = np.mean([min(len(s) - 1, 20) for s in train[:2000]])
        assert all(b["positions"] == pytest.approx(mean * len(b["users"])) for b in batches)
    assert sum(b["inputs"].numel() for b in bucketed) < 0.5 * sum(b["inputs"].numel() for b in plain)
    assert len({b["inputs"].shape[1] for b in bucketed}) > 1  # batch lengths vary: pools sorted, batches shuffled


def test_temporal_split_cuts_at_one_global_time():
    frame = pd.DataFrame({"user_id": ["a"] * 5 + ["b"] * 5, "item_id": list("12345") + list("23456"),
                          "timestamp": [1, 2, 3, 8, 10, 1, 2, 9, 10, 11]})
    data = build_interactions(frame)
    split = temporal(data, valid_at=0.6, test_at=0.8)  # cuts at times 8.4 and 10
    assert [data.item_ids[s].tolist() for s in split.train] == [["1", "2", "3", "4"], ["2", "3"]]
    assert data.item_ids[split.valid.targets].tolist() == ["4"] and split.valid.users.tolist() == [1]
    assert data.item_ids[split.test.targets].tolist() == ["5", "5"]
    assert len(split.test.histories[1]) == 3
    with pytest.raises(RecommenderError, match="timestamps"):
        temporal(build_interactions(frame.drop(columns="timestamp")))


def test_cold_start_split_keeps_held_out_items_out_of_training(data):
    split = cold_start(data, share=0.2, seed=0)
    cold = set(split.cold_items.tolist())
    assert len(cold) == 12
    assert not cold & set(np.concatenate(split.train).tolist())
    for eval_set in (split.valid, split.test):
        assert set(eval_set.targets.tolist()) <= cold
        assert all(len(h) and not cold & set(h.tolist()) for h in eval_set.histories)
    assert not set(split.valid.targets.tolist()) & set(split.test.targets.tolist())


# ---- features from the store ---------------------------------------------------------------------------
def test_features_are_aligned_to_the_item_index(tmp_path):
    vectors = topic_vectors()
    store = make_store(tmp_path / "store", vectors)
    item_ids = ["5", "0", "unknown"]
    features, report = load_item_features(store, ["text_vec"], item_ids)
    assert np.allclose(features[0], vectors[5]) and np.allclose(features[1], vectors[0])
    assert not features[2].any() and report["items_without_features"] == 1
    with pytest.raises(RecommenderError, match="no feature column 'clip_vec'; its vector columns are: text_vec"):
        load_item_features(store, ["clip_vec"], item_ids)
    with pytest.raises(RecommenderError, match="have 16 dimensions but the model expects 32"):
        load_item_features(store, ["text_vec"], item_ids, expected_dim=32)
    with pytest.raises(RecommenderError, match="not a vector column"):
        load_item_features(store, ["title"], item_ids)


# ---- models beat popularity on learnable patterns --------------------------------------------------------
@pytest.fixture(scope="module")
def popularity(split):
    return trained("popularity", split)[1]


@pytest.mark.parametrize("model, extra", [
    ("bpr", {"lr": 5e-2, "batch_size": 512, "epochs": 8}),
    ("lightgcn", {"lr": 5e-2, "batch_size": 512, "epochs": 8}),
    ("sasrec", {}),
    ("sasrec", {"sasrec": {"loss": "bce"}, "lr": 1e-2}),
])
def test_collaborative_models_beat_popularity(split, popularity, model, extra):
    net, metrics = trained(model, split, **extra)
    assert metrics["ndcg@10"] > popularity["ndcg@10"] + 0.15, (model, metrics, popularity)
    users = torch.arange(3)
    scores, items = net.recommend(users, split.test.histories[:3], k=5)
    assert items.shape == (3, 5) and not set(items[0].tolist()) & set(split.test.histories[0].tolist())


def test_lr_plateau_factor_cuts_the_lr_after_each_epoch_without_a_new_best(split):
    tcfg = train_config("bpr", lr=0.5, epochs=8, patience=8, lr_plateau_factor=0.5)
    net = build_model(tcfg, split.n_users, split.n_items, None)
    history = fit(net, split, tcfg)
    best, expected, cuts = -np.inf, 0.5, 0  # the untrained model's validation is no best to beat
    for entry in history[1:]:
        assert entry["lr"] == pytest.approx(expected)
        if entry["valid_ndcg@10"] > best:
            best = entry["valid_ndcg@10"]
        else:
            expected, cuts = expected * 0.5, cuts + 1
    assert cuts > 0


def test_cosine_lr_falls_to_zero_over_the_epochs_or_the_time_limit(split):
    tcfg = train_config("bpr", lr=0.5, epochs=4, patience=8, lr_schedule="cosine")
    history = fit(build_model(tcfg, split.n_users, split.n_items, None), split, tcfg)
    assert [entry["lr"] for entry in history[1:]] == pytest.approx([0.5, 0.5 * 0.8535534, 0.25, 0.5 * 0.1464466])
    timed = train_config("bpr", epochs=100, lr_schedule="cosine", time_limit_s=100)
    assert _schedule(timed, 1, 50.0) == pytest.approx(0.5)  # half the time spent: the cosine's midpoint
    assert _schedule(timed, 51, 10.0) == pytest.approx(0.5)  # half the epochs, whichever budget runs out first
    assert _schedule(timed, 2, 150.0) == 0.0
    assert _schedule(train_config("bpr", time_limit_s=100), 2, 50.0) == 1.0


def test_time_limit_stops_after_the_epoch_that_passes_it_and_keeps_the_best(split):
    tcfg = train_config("bpr", lr=0.05, epochs=50, patience=50, time_limit_s=1e-9)
    net = build_model(tcfg, split.n_users, split.n_items, None)
    history = fit(net, split, tcfg)
    assert [entry["epoch"] for entry in history] == [0, 1]  # the first epoch already ends past the limit
    best = max(entry["valid_ndcg@10"] for entry in history[1:])
    assert evaluate(net, split.valid, tcfg.mask_history).metrics["ndcg@10"] == pytest.approx(best)  # best weights kept


def test_ema_validates_keeps_and_returns_the_averaged_weights(split):
    settings = {"lr": 5e-2, "batch_size": 512, "epochs": 4, "patience": 8}
    tcfg = train_config("lightgcn", ema_decay=0.9, **settings)
    net = build_model(tcfg, split.n_users, split.n_items, None)
    history = fit(net, split, tcfg)
    plain = fit(build_model(tcfg, split.n_users, split.n_items, None), split, train_config("lightgcn", **settings))
    averaged, trained = ([entry["valid_ndcg@10"] for entry in h[1:]] for h in (history, plain))
    assert averaged != trained  # the same steps (same seed), validated as their average
    assert evaluate(net, split.valid, tcfg.mask_history).metrics["ndcg@10"] == pytest.approx(max(averaged))


def test_weight_average_forgets_the_start_quickly_and_gives_the_trained_weights_back():
    model = Unlearner(3)  # one parameter, 1 at the start
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average.update()  # the first step's decay is 2 / 11, not 0.99
    assert average.average[0].item() == pytest.approx(2 / 11)
    with average.applied():
        assert model.weight.item() == pytest.approx(2 / 11)
    assert model.weight.item() == 0.0


class Unlearner(Recommender):
    """Ranks items by a weight times their training popularity, rarest first while the weight is positive; its
    loss drives the weight below zero, which on the test split ranks worse (the test checks that premise)."""

    name = "unlearner"

    def __init__(self, n_items: int):
        super().__init__(0, n_items, Section())
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("popularity", torch.zeros(n_items))

    def prepare(self, train):
        self.popularity.copy_(torch.bincount(torch.as_tensor(np.concatenate(train)), minlength=self.n_items))

    def batches(self, train, batch_size, rng):
        return iter([{}] * 3)

    def loss(self, batch):
        return self.weight

    def score(self, users, histories):
        return -self.weight * self.popularity.expand(len(histories), -1)


def test_an_untrained_model_that_validates_best_is_not_the_best_epoch(split):
    tcfg = train_config("bpr", lr=0.5, epochs=3, patience=5, lr_plateau_factor=0.5)
    net = Unlearner(split.n_items)
    history = fit(net, split, tcfg)
    assert history[0]["valid_ndcg@10"] > max(entry["valid_ndcg@10"] for entry in history[1:])
    assert history[0]["best_epoch"] == 1 and net.weight.item() < 0  # the first trained epoch's weights
    assert [entry["lr"] for entry in history[1:]] == [0.5, 0.5, 0.25]  # the first cut comes after epoch 2


def test_sasrec_learns_the_next_item(split, popularity):
    _, metrics = trained("sasrec", split)
    assert metrics["recall@5"] > 0.8 > popularity["recall@5"]


@pytest.mark.parametrize("model, extra", [
    ("content_knn", {}),
    ("two_tower", {"lr": 1e-2}),
    ("two_tower", {"lr": 1e-2, "two_tower": {"loss": "inbatch", "id_embedding": True}}),
    ("sasrec_content", {}),
    ("sasrec_content", {"sasrec_content": {"id_embedding": False}}),
])
def test_content_models_beat_popularity(split, popularity, model, extra):
    _, metrics = trained(model, split, topic_vectors(), **extra)
    assert metrics["ndcg@10"] > popularity["ndcg@10"] + 0.1, (model, metrics, popularity)


@pytest.mark.parametrize("model, extra", [("two_tower", {"lr": 1e-2}), ("sasrec_content", {})])
def test_content_models_rank_cold_items(data, model, extra):
    """Held-out items are no negatives in training: sasrec_content's ID embeddings of them stay zero."""
    split = cold_start(data, share=0.2, seed=0)
    net, cold = trained(model, split, topic_vectors(), **extra)
    _, pop = trained("popularity", split)
    random_recall = 10 / N_ITEMS
    assert cold["recall@10"] > 2 * random_recall > pop["recall@10"], (cold, pop)
    if model == "sasrec_content":
        assert not net.item_emb.weight[torch.as_tensor(split.cold_items)].any()


def test_models_needing_features_say_so(split):
    with pytest.raises(RecommenderError, match="needs item features"):
        build_model(train_config("two_tower"), split.n_users, split.n_items, None)


# ---- runs, checkpoints, export, compare ---------------------------------------------------------------
def run_config(tmp_path: Path, **train):
    frame = synthetic_frame()
    frame.to_csv(tmp_path / "interactions.csv", index=False)
    return validate_config({"store": {"uri": str(tmp_path / "store")},
                            "train": {"epochs": 3, "runs_dir": str(tmp_path / "runs"), **FAST,
                                      "data": {"path": str(tmp_path / "interactions.csv")}, **train}})


def test_run_writes_folder_checkpoint_round_trip_and_export(tmp_path):
    store = make_store(tmp_path / "store", topic_vectors())
    cfg = run_config(tmp_path, model="sasrec_content", features=["text_vec"], name="sc", export_column="cf_vec")
    result = run_train(cfg)
    run_dir = tmp_path / "runs" / "sc"
    for name in ("metrics.json", "model.pt", "model.json", "config.yaml", "curve.png", "items.json",
                 "test_per_user.csv"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["mask_history"] is True and {"valid", "test", "test_unmasked"} <= set(metrics)
    assert set(metrics["test"]) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)}
    model, meta = load_run(run_dir)
    histories = prepare_data(cfg).split.test.histories[:4]
    result.model.eval()
    assert torch.allclose(model.score(torch.arange(4), histories),
                          result.model.cpu().score(torch.arange(4), histories), atol=1e-5)
    exported = store.scan([KEY, "cf_vec", "cf_vec_model", "cf_vec_source"])
    assert exported["cf_vec_model"].to_pylist() == [result.run_id] * N_ITEMS
    assert exported["cf_vec_source"][0].as_py() == "sasrec_content:text_vec"
    assert exported.schema.field("cf_vec").type == vector_type(64)


def test_compare_writes_table_csv_and_chart(tmp_path):
    make_store(tmp_path / "store", topic_vectors())
    cfg = run_config(tmp_path)
    cfg.compare.models = ["popularity", "content_knn:text_vec", "bpr"]
    table, out_dir = run_compare(cfg)
    assert list(table["model"]) == ["popularity", "content_knn", "bpr"]
    assert (out_dir / "compare.csv").is_file() and (out_dir / "compare.png").is_file()
    text = (out_dir / "compare.md").read_text()
    assert "history masked" in text and "| content_knn | text_vec |" in text


@pytest.mark.slow
def test_ray_train_data_parallel_workers(tmp_path, ray_local):
    cfg = run_config(tmp_path, model="sasrec", workers=2, epochs=3, lr=8e-3, batch_size=64, name="dp",
                     lr_schedule="cosine", time_limit_s=1e6)  # the workers agree on the time spent
    result = run_train(cfg)
    assert result.metrics["test"]["ndcg@10"] > 0.3  # popularity is about .06 here
    assert [entry["lr"] for entry in result.metrics["history"][1:]] == pytest.approx([8e-3, 6e-3, 2e-3])
    model, _ = load_run(tmp_path / "runs" / "dp")
    assert torch.equal(model.item_emb.weight, result.model.item_emb.weight.cpu())


SEEREC = str(Path(sys.executable).with_name("seerec"))


def test_cli_train_and_job_compare_end_to_end(tmp_path, capsys):
    from jobs.train import main

    make_store(tmp_path / "store", topic_vectors())
    cfg = run_config(tmp_path)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = subprocess.run([SEEREC, "train", "-c", str(config), "--model", "two_tower", "train.features=[text_vec]",
                             "train.name=tt", "train.epochs=2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "runs" / "tt" / "metrics.json").read_text())["model"] == "two_tower"
    # The job entry point (what `ray job submit -- python -m jobs.train` runs), in-process to save a start-up.
    assert main(["-c", str(config), "--compare", "compare.models=[popularity, bpr]", "train.epochs=1"]) == 0
    assert (tmp_path / "runs" / "compare" / "compare.md").is_file()
    capsys.readouterr()
    assert main(["-c", str(config), "--compare", "compare.models=[popularity, two_tower:clip_vec]"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: the store has no feature column 'clip_vec'; its vector columns are: text_vec"]


def test_real_beauty_and_scientific_load_with_documented_sizes():
    from tests.helpers import require_shared

    beauty = load_interactions(require_shared("amazon-beauty", "Beauty.txt"))
    assert (beauty.n_users, beauty.n_items, beauty.n_interactions) == (22_363, 12_101, 198_502)
    assert beauty.item_ids[0] == "1" and beauty.item_ids[-1] == "12101"  # the catalog's item_id strings
    split = leave_one_out(beauty)
    assert len(split.test) == 22_363 and split.n_train == 198_502 - 2 * 22_363
    scientific = load_interactions(require_shared("amazon-scientific", "Scientific.inter.json"))
    assert (scientific.n_users, scientific.n_items, scientific.n_interactions) == (8_317, 4_344, 58_492)
    assert scientific.item_ids[0] == "0" and scientific.item_ids[-1] == "4343"
