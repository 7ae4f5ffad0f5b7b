"""The generative recommender: prefix trie, constrained beam search, training through the shared loop, new items."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.config import validate_config
from pipeline.schema import KEY, TIMESTAMP, semantic_id_family
from recommenders.data import RecommenderError, build_interactions, leave_one_out
from recommenders.evaluate import evaluate
from recommenders.experiment import run_compare, run_train
from recommenders.generative.semantic_ids import add_new_items
from recommenders.generative.tiger import START, TIGER, TigerConfig
from recommenders.generative.trie import SemanticIdTrie
from recommenders.runs import load_run
from recommenders.train import build_model, fit
from tests.test_recommenders import N_ITEMS, N_TOPICS, make_store, run_config

TINY = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 4, "ff": 64, "dropout": 0.0,
        "user_buckets": 0}
FAST = {"progress": False, "cpu_threads": 1, "eval_batch_size": 512}


def dedup_catalog() -> np.ndarray:
    """24 items over 3 codes + a dedup level: prefixes shared by 1 to 6 items, and one 2-code ID (padded -1)."""
    rows = []
    for group, size in enumerate((6, 5, 4, 3, 2, 1, 1, 1)):
        a, b, c = group // 4, group % 4, (group * 3) % 4
        rows += [[a, b, c, d] for d in range(size)]
    rows.append([3, 2, -1, -1])
    return np.array(rows, dtype=np.int64)


def tiny_model(codes: np.ndarray, seed: int = 0, **hparams) -> TIGER:
    torch.manual_seed(seed)
    return TIGER(4, len(codes), TigerConfig(**{**TINY, **hparams}), torch.as_tensor(codes)).eval()


HISTORIES = [np.array([0, 7, 12]), np.array([23]), np.array([], dtype=np.int64), np.array([5, 5, 18, 2])]


# ---- the trie ----------------------------------------------------------------------------------------
def test_trie_masks_next_codes_maps_leaves_and_grows():
    trie = SemanticIdTrie.from_codes(np.array([[0, 1, 0], [0, 1, 1], [2, -1, -1], [-1, -1, -1]]), vocab=4)
    end = trie.end
    assert end == 3 and trie.n_items == 3  # the item without an ID is not in the trie
    prefixes = torch.tensor([[0, 1], [2, end], [1, 0]])
    mask = trie.next_mask(prefixes)
    assert mask[0].tolist() == [True, True, False, False]  # dedup codes 0 and 1 under (0, 1)
    assert mask[1].tolist() == [False, False, False, True]  # the 1-code ID only continues with END
    assert not mask[2].any()  # a prefix no item has
    assert trie.next_mask(torch.zeros(1, 0, dtype=torch.long))[0].tolist() == [True, False, True, False]
    full = torch.tensor([[0, 1, 1], [2, end, end], [0, 1, 2]])
    assert trie.items(full).tolist() == [1, 2, -1]
    assert trie.add(7, [0, 1, 2]) and trie.items(full).tolist() == [1, 2, 7]  # grows; the tensors follow
    assert not trie.add(8, [0, 1, 2]) and trie.duplicates == 1  # a duplicate ID keeps the first item
    with pytest.raises(ValueError, match="outside"):
        trie.add(9, [0, 3])


# ---- constrained beam search -------------------------------------------------------------------------
@pytest.mark.parametrize("beam", [1, 3, 7, 30])
def test_every_beam_output_is_a_distinct_catalog_item(beam):
    codes = dedup_catalog()
    model = tiny_model(codes)
    items, scores = model.beam_search(torch.arange(4), HISTORIES, beam)
    assert items.shape == (4, beam)
    n_valid = min(beam, len(codes))  # beam 7 > the 6 items sharing the largest prefix; beam 30 > the catalog
    assert (items[:, :n_valid] >= 0).all() and torch.isfinite(scores[:, :n_valid]).all()
    assert (items[:, n_valid:] == -1).all() and torch.isinf(scores[:, n_valid:]).all()
    for row in items:
        assert len(set(row[:n_valid].tolist())) == n_valid
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    assert model.evaluation_report()["invalid_rate"] == 0.0


def test_unconstrained_decoding_measures_invalid_ids():
    model = tiny_model(dedup_catalog())
    model.beam_search(torch.arange(4), HISTORIES, 10, constrained=False)
    report = model.evaluation_report()
    assert report["generated_ids"] == 40 and report["invalid_ids"] > 0  # 24 of 625 code tuples are items
    model.start_evaluation()
    model.beam_search(torch.arange(4), HISTORIES, 10)
    assert model.evaluation_report()["invalid_ids"] == 0


def torch_decoder_with_weights_of(model: TIGER) -> torch.nn.TransformerDecoder:
    """torch's pre-norm decoder layers holding the weights of TIGER's own decoder, as the reference."""
    d, layers = model.emb.embedding_dim, model.decoder.layers
    ref = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(
        d, model.config.heads, model.config.ff, 0.0, activation="gelu", batch_first=True, norm_first=True),
        len(layers), norm=torch.nn.LayerNorm(d)).eval()
    with torch.no_grad():
        for mine, theirs in zip(layers, ref.layers, strict=True):
            cross = mine.cross_attn
            pairs = [(theirs.self_attn.in_proj_weight, mine.self_attn.qkv.weight),
                     (theirs.self_attn.in_proj_bias, mine.self_attn.qkv.bias),
                     (theirs.self_attn.out_proj, mine.self_attn.proj), (theirs.multihead_attn.out_proj, cross.proj),
                     (theirs.multihead_attn.in_proj_weight, torch.cat([cross.q.weight, cross.kv.weight])),
                     (theirs.multihead_attn.in_proj_bias, torch.cat([cross.q.bias, cross.kv.bias])),
                     (theirs.linear1, mine.ff[0]), (theirs.linear2, mine.ff[3]),
                     (theirs.norm1, mine.ln1), (theirs.norm2, mine.ln2), (theirs.norm3, mine.ln3)]
            for target, source in pairs:
                if isinstance(target, torch.nn.Module):
                    target.load_state_dict(source.state_dict())
                else:
                    target.copy_(source)
        ref.norm.load_state_dict(model.decoder.norm.state_dict())
    return ref


def test_decoder_equals_torch_decoder_layers_with_beams_sharing_a_memory():
    """Beams share their user's memory in cross-attention; the result must be torch's decoder on one copy each."""
    model = tiny_model(dedup_catalog(), seed=1, decoder_layers=2)
    states, pad = model.encode(model.encoder_tokens(torch.arange(4), HISTORIES))
    group = 3
    y = torch.randn(4 * group, 3, states.shape[2])
    causal = torch.nn.Transformer.generate_square_subsequent_mask(3)
    with torch.no_grad():
        expected = torch_decoder_with_weights_of(model)(
            y, states.repeat_interleave(group, 0), tgt_mask=causal, tgt_is_causal=True,
            memory_key_padding_mask=pad.repeat_interleave(group, 0))
        assert torch.allclose(model.decoder(y, model.decoder.memory(states, pad)), expected, atol=1e-5)


def test_decoding_level_by_level_with_the_cache_equals_teacher_forcing():
    model = tiny_model(dedup_catalog(), seed=2, decoder_layers=2)
    targets = model.item_codes()[torch.tensor([0, 7, 12, 23, 5, 18, 2, 9])]  # two per user
    with torch.no_grad():
        memory = model.memory(torch.arange(4), HISTORIES)
        expected = model.decode(memory, targets[:, :-1])
        cache, tokens, steps = model.decoder.new_cache(), torch.full((len(targets),), START), []
        for level in range(model.levels):
            steps.append(model.decode_step(memory, tokens, level, cache))
            tokens = model.code_tokens(targets[:, level:level + 1], level)[:, 0]
    assert torch.allclose(torch.stack(steps, dim=1), expected, atol=1e-5)


def test_full_width_beam_equals_exact_scoring():
    codes = dedup_catalog()
    model = tiny_model(codes, seed=3)
    items, scores = model.beam_search(torch.arange(4), HISTORIES, len(codes))
    exact = model.exact_scores(torch.arange(4), HISTORIES)
    assert torch.equal(items, exact.argsort(dim=1, descending=True))
    assert torch.allclose(scores, exact.sort(dim=1, descending=True).values, atol=1e-4)
    dense = model.score(torch.arange(4), HISTORIES)  # the dense matrix the shared evaluation ranks
    assert torch.isinf(dense).sum(1).tolist() == [4] * 4  # beam 20 of 24 items: the other 4 score -inf
    model.beam_size = len(codes)
    assert torch.allclose(model.score(torch.arange(4), HISTORIES), exact, atol=1e-4)


# ---- training through the shared loop; new items -----------------------------------------------------
def successor_split(n_items: int = 40, n_users: int = 160, seed: int = 0):
    """Item i is always followed by item (i + 1) % n_items: a pattern the model must learn, not guess."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start, length = rng.integers(n_items), rng.integers(5, 9)
        rows += [(f"u{u}", str((start + t) % n_items), t) for t in range(length)]
    import pandas as pd

    return leave_one_out(build_interactions(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])))


def successor_codes(n_items: int = 40, seed: int = 0) -> np.ndarray:
    """Random distinct 3-level IDs over 4 codes, plus a dedup level (0 for all but a few)."""
    rng = np.random.default_rng(seed)
    tuples = rng.permutation(64)[:n_items - 4]
    base = np.stack([tuples // 16, (tuples // 4) % 4, tuples % 4], axis=1)
    base = np.concatenate([base, base[:4]])  # 4 items share their 3 codes with another: dedup 1
    return np.concatenate([base, np.r_[np.zeros(n_items - 4), np.ones(4)][:, None]], axis=1).astype(np.int64)


@pytest.mark.parametrize("length_buckets", [False, True])
def test_training_batches_hold_every_position_once(length_buckets):
    split = successor_split()
    model = tiny_model(successor_codes(), max_items=3, length_buckets=length_buckets)
    seen = []
    for batch in model.batches(split.train, 16, np.random.default_rng(0)):
        assert batch["tokens"].shape[1] <= 1 + 3 * model.levels
        seen += [tuple(t) for t in batch["targets"].tolist()]
    codes = model.item_codes()
    expected = [tuple(codes[item].tolist()) for seq in split.train for item in seq[1:]]
    assert sorted(seen) == sorted(expected)


@pytest.fixture(scope="module")
def trained():
    split = successor_split()
    codes = successor_codes()  # item ids "0".."39" sort numerically, so item index i is item "i"
    tcfg = validate_config({"train": {"model": "tiger", "epochs": 10, "batch_size": 64, "lr": 3e-3, "patience": 3,
                                      **FAST, "tiger": {**TINY, "d_model": 64, "encoder_layers": 2,
                                                        "decoder_layers": 2, "ff": 128, "max_items": 5}}}).train
    model = build_model(tcfg, split.n_users, split.n_items, codes)
    history = fit(model, split, tcfg)
    return model, split, history


def test_short_training_learns_the_pattern(trained):
    model, split, history = trained
    metrics = evaluate(model, split.test, ks=(1, 10)).metrics  # evaluate starts a new evaluation report
    assert metrics["recall@1"] >= 0.9, (metrics, history[-1])
    assert model.evaluation_report()["invalid_rate"] == 0.0


def test_an_item_added_after_training_can_be_generated(trained):
    model, split, _ = trained
    model = TIGER(model.n_users, model.n_items, model.config, model.semantic_ids.clone()).eval().requires_grad_(False)
    model.load_state_dict(trained[0].state_dict())
    users, histories = torch.as_tensor(split.test.users), split.test.histories
    top = model.beam_search(users, histories, 1)[0][:, 0]
    row = int(np.flatnonzero(top.numpy() == split.test.targets)[0])  # a user whose next item the model gets
    users, histories = users[row:row + 1], histories[row:row + 1]
    # A new item with the ID of that target's sibling (same 3 codes, another dedup code) joins the catalog.
    target = int(split.test.targets[row])
    a, b, c, d = model.semantic_ids[target].tolist()
    sibling = [a, b, c, 1 - d]
    taken = {tuple(r) for r in model.semantic_ids.tolist()}
    if tuple(sibling) in taken:  # the target is itself one of a dedup pair: take a fresh last code instead
        sibling = [a, b, c, 2]
    new = int(model.add_items([sibling])[0])
    assert new == 40 and model.n_items == 41
    # A beam as wide as the catalog holds every item the trie can reach: the new one now among them.
    items, scores = model.beam_search(users, histories, model.n_items)
    assert items[0, 0] == target and new in items[0].tolist()  # generated, without retraining
    assert torch.isfinite(scores[0, items[0].tolist().index(new)])
    scores = model.score(users, histories)
    assert scores.shape == (1, 41) and torch.isfinite(scores[0, new])


# ---- seerec train / compare with the store's semantic IDs ---------------------------------------------
def write_semantic_ids(store, ids: dict[str, list[int]]) -> None:
    family = semantic_id_family()
    now = datetime(2024, 6, 1, tzinfo=UTC)
    n = len(ids)
    store.write_family(family, pa.table({
        KEY: list(ids), family.name: pa.array(list(ids.values()), pa.list_(pa.int16())),
        family.model_column: ["test-tokenizer"] * n, family.time_column: pa.array([now] * n, TIMESTAMP),
        family.error_column: pa.nulls(n, pa.string())}))


def test_train_and_compare_read_semantic_ids_from_the_store_and_new_items_join(tmp_path):
    store = make_store(tmp_path / "store", ids=[str(i) for i in range(N_ITEMS)])
    # The synthetic users follow one topic (item % N_TOPICS): the first code is the topic.
    write_semantic_ids(store, {str(i): [i % N_TOPICS, (i // N_TOPICS) % 4, (i // N_TOPICS) // 4]
                               for i in range(N_ITEMS)})
    cfg = run_config(tmp_path, model="tiger", name="tg", epochs=2, lr=3e-3, batch_size=64,
                     tiger={**TINY, "codebook_size": 8})
    result = run_train(cfg)
    metrics = json.loads((tmp_path / "runs" / "tg" / "metrics.json").read_text())
    report = metrics["evaluation_report"]
    assert report["invalid_rate"] == 0.0 and report["generated_ids"] > 0
    assert metrics["features_report"]["levels"] == 3
    model, _ = load_run(tmp_path / "runs" / "tg")
    assert model.features is None and model.semantic_ids.dtype == torch.int64  # the codes never ride as floats
    histories = [np.array([0, 6, 12]), np.array([1, 7])]
    assert torch.equal(model.score(torch.arange(2), histories), result.model.cpu().eval().score(torch.arange(2),
                                                                                                  histories))
    # A new item gets an ID after training (as `seerec quantize --assign-only` writes it): the model takes it.
    make_store(tmp_path / "store", ids=["new-1"])
    write_semantic_ids(store, {"new-1": [0, 7, 0]})
    items = json.loads((tmp_path / "runs" / "tg" / "items.json").read_text())
    assert add_new_items(model, store, "semantic_id", items) == ["new-1"]
    generated, _ = model.beam_search(torch.arange(2), histories, N_ITEMS + 1)
    assert (generated == N_ITEMS).any(dim=1).all()

    cfg.compare.models = ["popularity", "tiger"]
    cfg.train.epochs = 1
    table, out_dir = run_compare(cfg)
    assert list(table["model"]) == ["popularity", "tiger"] and (out_dir / "compare.md").is_file()
    # A run folder from before models carried their config (and TIGER its integer buffer): one sentence.
    meta = json.loads((tmp_path / "runs" / "tg" / "model.json").read_text())
    meta.pop("config")
    (tmp_path / "runs" / "tg" / "model.json").write_text(json.dumps({**meta, "feature_dim": 3}))
    with pytest.raises(RecommenderError, match="train it again"):
        load_run(tmp_path / "runs" / "tg")


def test_config_checks_heads_and_missing_semantic_ids(tmp_path):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="multiple of heads"):
        validate_config({"train": {"tiger": {"d_model": 128, "heads": 6}}})
    make_store(tmp_path / "store")
    with pytest.raises(RecommenderError, match="no semantic-ID column 'semantic_id'"):
        run_train(run_config(tmp_path, model="tiger"))
