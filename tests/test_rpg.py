"""RPG: OPQ long IDs, the parallel multi-digit objective, exact and graph decoding, checkpoints, new items."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from extractors.semantic_ids import Tokenizer, make_tokenizer
from jobs.quantize import run_quantize
from pipeline.config import validate_config
from pipeline.schema import KEY
from recommenders.base import Recommender
from recommenders.data import RecommenderError
from recommenders.evaluate import evaluate
from recommenders.experiment import run_train
from recommenders.generative.rpg import RPG, RPGConfig
from recommenders.generative.semantic_ids import add_new_items
from recommenders.runs import load_run
from recommenders.train import build_model, fit
from tests.test_generative import successor_split, write_semantic_ids
from tests.test_recommenders import N_ITEMS, N_TOPICS, make_store, run_config, topic_vectors

TINY = {"hidden": 32, "layers": 1, "heads": 2, "dropout": 0.0, "max_len": 5}
FAST = {"progress": False, "cpu_threads": 1, "eval_batch_size": 512}


def random_codes(n_items: int, levels: int, codes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, codes, (n_items, levels)).astype(np.int64)


def tiny_model(codes: np.ndarray, seed: int = 0, **hparams) -> RPG:
    torch.manual_seed(seed)
    return RPG(4, len(codes), RPGConfig(**{**TINY, **hparams}), torch.as_tensor(codes)).eval()


HISTORIES = [np.array([0, 7, 12]), np.array([23]), np.array([], dtype=np.int64), np.array([5, 5, 18, 2])]


# ---- OPQ ---------------------------------------------------------------------------------------------
def anisotropic(n: int = 1500, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Variance falling 100-fold over the dimensions, then rotated: plain PQ's sub-spaces get unequal shares."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    return ((rng.standard_normal((n, dim)) * np.geomspace(10, 0.1, dim)) @ rotation).astype(np.float32)


def test_opq_reconstructs_better_than_plain_pq_and_round_trips(tmp_path):
    X = anisotropic()
    errors = {}
    for rounds in (0, 8):
        tok = make_tokenizer("opq", levels=4, codebook_size=16, preprocess="none", opq_iters=rounds).fit(X)
        codes = tok.encode(X)
        assert codes.shape == (len(X), 4) and codes.max() < 16
        errors[rounds] = float(((tok.decode(codes) - X) ** 2).sum(1).mean())
    assert errors[8] < 0.7 * errors[0], errors  # the learned rotation spreads the variance over the digits
    rotation = tok.rotation
    assert np.allclose(rotation @ rotation.T, np.eye(16), atol=1e-4)
    loaded = Tokenizer.load(tok.save(tmp_path / "tok"))
    assert loaded.kind == "opq" and np.array_equal(loaded.encode(X), tok.encode(X))


def test_quantize_job_writes_long_opq_ids(tmp_path):
    store = make_store(tmp_path / "store", topic_vectors())
    cfg = validate_config({"store": {"uri": str(tmp_path / "store")},
                           "quantize": {"tokenizer": "opq", "levels": 8, "codebook_size": 4, "opq_iters": 2,
                                        "out_dir": str(tmp_path / "tok"), "collisions": "append"}})
    summary = run_quantize(cfg)
    assert summary.done == N_ITEMS
    ids = store.scan([KEY, "semantic_id"])["semantic_id"].to_pylist()
    assert {len(v) for v in ids} == {9} and len({tuple(v) for v in ids}) == N_ITEMS  # 8 digits + dedup, unique
    assert Tokenizer.saved_meta(tmp_path / "tok")["kind"] == "opq"


# ---- the network and decoding ----------------------------------------------------------------------
def test_shapes_and_exact_scores_equal_brute_force():
    codes = random_codes(30, 6, 5)
    codes[3, 4:] = -1  # a shorter ID: its missing digits are the END code
    codes[9] = -1  # an item without an ID is never ranked
    model = tiny_model(codes)
    assert model.item_table().shape == (30, 32)
    log_probs = model.digit_log_probs(HISTORIES)
    assert log_probs.shape == (4, 6, model.vocab) and model.vocab == 6
    scores = model.score(torch.arange(4), HISTORIES)
    assert scores.shape == (4, 30)
    padded = model.item_codes()
    for b in range(4):
        for item in range(30):
            expected = sum(float(log_probs[b, d, padded[item, d]]) for d in range(6)) if item != 9 else -np.inf
            assert scores[b, item].item() == pytest.approx(expected, abs=1e-4)
    _, top = model.recommend(torch.arange(4), HISTORIES, k=5, exclude_history=False)
    assert torch.equal(top, torch.topk(scores, 5).indices)


def test_graph_decoding_returns_catalog_items_and_recalls_the_exact_top():
    codes = random_codes(600, 8, 16, seed=1)
    codes[::50] = -1  # items without IDs are never candidates
    model = tiny_model(codes, scoring="graph", beam_size=40, graph_neighbors=30, graph_steps=3)
    model.popularity.copy_(torch.rand(600))
    histories = [np.random.default_rng(u).integers(0, 600, 4) for u in range(32)]
    log_probs = model.digit_log_probs(histories)
    items, scores = model.graph_decode(log_probs, histories)
    assert items.shape == (32, 40)
    assert all(len(set(row)) == 40 for row in items.tolist())  # distinct
    assert bool(model.has_id()[items].all()) and torch.isfinite(scores).all()
    assert torch.allclose(scores, model.item_scores(log_probs, items))
    exact_top = torch.topk(model.exact_scores(log_probs), 10).indices
    recall = np.mean([len(set(e) & set(g)) / 10 for e, g in zip(exact_top.tolist(), items.tolist(), strict=True)])
    assert recall >= 0.8, recall
    model.start_evaluation()
    dense = model.score(torch.arange(32), histories)
    assert (torch.isfinite(dense).sum(1) == 40).all()
    # Per user: popular + last item's neighbours, then 3 x (beam + its neighbours), whatever the catalog size.
    assert model.evaluation_report()["items_scored_per_user"] == 40 + 30 + 3 * (40 + 40 * 30)


def test_the_item_objective_is_a_softmax_over_items_of_their_mean_digit_logits():
    codes = random_codes(30, 6, 5, seed=2)
    codes[9] = -1  # an item without an ID is no candidate
    inputs = torch.tensor([[-1, 3, 7, 12], [1, 2, 4, 8]])
    batch = {"inputs": inputs, "targets": torch.tensor([[-1, 7, 12, 0], [2, 4, 8, 16]]), "positions": 7.0}
    digits, both = (tiny_model(codes, objective=objective, item_negatives=3000)
                    for objective in ("digits", "digits+items"))  # 3,000 draws of 30 items: all are candidates
    logits = both.digit_logits(both.encode_items(inputs)[batch["targets"] >= 0])
    item_logits = torch.stack([logits[:, range(6), both.item_codes()[item]].mean(1) for item in range(30)], dim=1)
    item_logits[:, 9] = -torch.inf
    targets = batch["targets"][batch["targets"] >= 0]
    expected = 6 * torch.nn.functional.cross_entropy(item_logits, targets, reduction="sum") / 7.0
    assert (both.loss(batch) - digits.loss(batch)).item() == pytest.approx(expected.item(), rel=1e-4)


# ---- training, checkpoints, new items -------------------------------------------------------------
def successor_ids(n_items: int = 40, seed: int = 0) -> np.ndarray:
    """Distinct 8-digit IDs over 4 codes (digits independent, as OPQ's)."""
    rng = np.random.default_rng(seed)
    while len(np.unique(ids := rng.integers(0, 4, (n_items, 8)), axis=0)) < n_items:
        pass
    return ids.astype(np.int64)


@pytest.fixture(scope="module")
def trained():
    split = successor_split()
    tcfg = validate_config({"train": {"model": "rpg", "epochs": 12, "batch_size": 32, "lr": 3e-3, "patience": 4,
                                      **FAST, "rpg": {**TINY, "hidden": 64}}}).train
    model = build_model(tcfg, split.n_users, split.n_items, successor_ids())
    history = fit(model, split, tcfg)
    return model, split, history


def test_training_lowers_the_loss_and_learns_the_pattern(trained):
    model, split, history = trained
    losses = [h["loss"] for h in history if h["loss"] is not None]
    assert losses[-1] < 0.5 * losses[0], losses
    assert evaluate(model, split.test, ks=(1, 10)).metrics["recall@1"] >= 0.9


def test_training_with_the_per_digit_loss_alone_learns_the_pattern():
    """The `trained` fixture uses the default objective (digits+items); `digits` alone must learn too."""
    split = successor_split()
    tcfg = validate_config({"train": {"model": "rpg", "epochs": 12, "batch_size": 32, "lr": 3e-3, "patience": 4,
                                      **FAST, "rpg": {**TINY, "hidden": 64, "objective": "digits"}}}).train
    model = build_model(tcfg, split.n_users, split.n_items, successor_ids())
    fit(model, split, tcfg)
    assert evaluate(model, split.test, ks=(1, 10)).metrics["recall@1"] >= 0.9


def test_save_load_round_trip_and_an_item_added_after_training(trained, tmp_path):
    model, split, _ = trained
    model.cpu().eval().save(tmp_path / "run")
    loaded, about = Recommender.load(tmp_path / "run")
    users, histories = torch.as_tensor(split.test.users), split.test.histories
    assert isinstance(loaded, RPG) and about["model"] == "rpg"
    assert torch.equal(loaded.score(users, histories), model.score(users, histories))
    # A new item with the ID of a user's (correctly predicted) next item ties with it at the top.
    top = loaded.recommend(users, histories, k=1)[1][:, 0]
    row = int(np.flatnonzero(top.numpy() == split.test.targets)[0])
    target = int(split.test.targets[row])
    new = int(loaded.add_items([loaded.semantic_ids[target].tolist()])[0])
    assert new == 40 and loaded.n_items == 41
    for scoring in ("exact", "graph"):
        loaded.scoring = scoring
        _, top2 = loaded.recommend(users[row:row + 1], histories[row:row + 1], k=2)
        assert sorted(top2[0].tolist()) == sorted([target, new]), scoring
    with pytest.raises(RecommenderError, match="digits in 0..3"):
        loaded.add_items([[0, 1, 9]])


def test_train_reads_opq_ids_from_the_store_and_new_items_join(tmp_path):
    store = make_store(tmp_path / "store", ids=[str(i) for i in range(N_ITEMS)])
    rng = np.random.default_rng(0)  # digit 0 is the topic the synthetic users follow, the others random
    write_semantic_ids(store, {str(i): [i % N_TOPICS, *rng.integers(0, 8, 5).tolist()] for i in range(N_ITEMS)})
    cfg = run_config(tmp_path, model="rpg", name="rpg", epochs=2, lr=3e-3, batch_size=64,
                     rpg={**TINY, "codebook_size": 8})
    run_train(cfg)
    metrics = json.loads((tmp_path / "runs" / "rpg" / "metrics.json").read_text())
    assert metrics["features_report"]["levels"] == 6 and metrics["evaluation_report"]["scoring"] == "exact"
    model, _ = load_run(tmp_path / "runs" / "rpg")
    make_store(tmp_path / "store", ids=["new-1"])
    write_semantic_ids(store, {"new-1": [0, 7, 7, 7, 7, 7]})
    items = json.loads((tmp_path / "runs" / "rpg" / "items.json").read_text())
    assert add_new_items(model, store, "semantic_id", items) == ["new-1"]
    scores = model.score(torch.arange(2), [np.array([0, 6]), np.array([1])])
    assert scores.shape == (2, N_ITEMS + 1) and torch.isfinite(scores[:, N_ITEMS]).all()
