"""Semantic-ID tokenizers, collision handling, diagnostics and the quantize job."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import load_file

from extractors.semantic_ids import (
    QuantizeError,
    Tokenizer,
    collision_stats,
    concat_columns,
    diagnose,
    make_tokenizer,
    resolve,
    write_diagnostics,
)
from extractors.semantic_ids.base import distinct_weights
from extractors.semantic_ids.collisions import METHODS
from extractors.semantic_ids.diagnostics import level_stats
from pipeline.config import QuantizeConfig
from pipeline.schema import BAD_VECTOR


def clustered(n=400, clusters=8, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 5
    labels = rng.integers(clusters, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def tiny_rqvae(**kw):
    params = dict(levels=2, codebook_size=8, preprocess="standardize", hidden=[32], latent_dim=8, epochs=15,
                  batch_size=64, lr=3e-3, restart_every=5)
    return make_tokenizer("rqvae", **{**params, **kw})


def test_rkmeans_codes_recover_clusters():
    X, labels = clustered()
    tok = make_tokenizer("rkmeans", levels=3, codebook_size=8, preprocess="none").fit(X, seed=1)
    codes = tok.encode(X)
    assert codes.shape == (400, 3) and codes.dtype == np.int16
    # Each first-level code holds one cluster, and each cluster one code: the clusters are recovered.
    assert all(len(set(labels[codes[:, 0] == c])) == 1 for c in np.unique(codes[:, 0]))
    assert all(len(set(codes[labels == k, 0])) == 1 for k in range(8))
    assert ((tok.decode(codes) - X) ** 2).sum(1).mean() < 0.5 * ((X - X.mean(0)) ** 2).sum(1).mean()


@pytest.mark.parametrize("normalize_residuals", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_ids_are_unique_after_collision_handling(method, normalize_residuals):
    X, _ = clustered(300)
    tok = make_tokenizer("rkmeans", levels=3, codebook_size=16, normalize_residuals=normalize_residuals).fit(X)
    codes = tok.encode(X)
    assert collision_stats(codes)["collision_rate"] > 0  # there is something to resolve
    ids = resolve(codes, method, tok.last_level_distances(X))
    assert ids.shape[1] == (4 if method == "append" else 3)
    assert collision_stats(ids)["unique_ids"] == len(X)
    if method == "append":
        assert (ids[:, :3] == codes).all()
    else:
        assert (ids[:, :2] == codes[:, :2]).all()


def test_reassign_fails_clearly_when_a_prefix_outgrows_the_last_level():
    codes = np.zeros((5, 2), np.int16)
    with pytest.raises(QuantizeError, match="use the append collision method"):
        resolve(codes, "reassign", np.random.default_rng(0).random((5, 4)))


@pytest.mark.parametrize("kind", ["rkmeans", "rqvae"])
def test_save_load_round_trip_gives_identical_codes(kind, tmp_path):
    X, _ = clustered(200)
    tok = (make_tokenizer("rkmeans", levels=3, codebook_size=8, preprocess="standardize", columns=["a", "b"])
           if kind == "rkmeans" else tiny_rqvae(epochs=2)).fit(X, seed=3)
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["tokenizer.json", "tokenizer.safetensors"]
    loaded = Tokenizer.load(tmp_path / "tok")
    assert type(loaded) is type(tok) and loaded.tokenizer_id == tok.tokenizer_id
    if kind == "rkmeans":  # the balanced levels' offsets travel with the codebooks
        assert loaded.balance == 1.0 and np.abs(loaded.offsets[1]).max() > 0
    np.testing.assert_array_equal(loaded.encode(X), tok.encode(X))
    np.testing.assert_allclose(loaded.decode(tok.encode(X)), tok.decode(tok.encode(X)), rtol=1e-5, atol=1e-6)


def skewed(n=1200, dim=32, seed=0):
    """8 clusters whose leftovers vary in size log-normally: plain k-means piles most items onto one code."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim)) * 4
    scale = np.exp(rng.normal(size=(n, 1)))
    return (centres[rng.integers(8, size=n)] + rng.normal(size=(n, dim)) * scale * 0.3).astype(np.float32)


def test_balanced_levels_spread_items_evenly_also_for_new_items():
    X = skewed()
    fit, new = X[:1000], X[1000:]
    plain, balanced = (make_tokenizer("rkmeans", levels=3, codebook_size=16, preprocess="none", balance=b).fit(fit)
                       for b in (0.0, 1.0))
    for part in (fit, new):
        plain_levels, balanced_levels = (level_stats(t.encode(part), [16] * 3) for t in (plain, balanced))
        assert plain_levels[0]["perplexity"] == pytest.approx(balanced_levels[0]["perplexity"])  # level 0 is plain
        for lp, lb in zip(plain_levels[1:], balanced_levels[1:], strict=True):
            assert lp["perplexity"] < 4 and lb["perplexity"] > 13  # of 16 codes
            assert lb["max_items_per_code"] <= 3 * len(part) / 16
        assert (collision_stats(balanced.encode(part))["collision_rate"]
                < 0.5 * collision_stats(plain.encode(part))["collision_rate"])


def test_balanced_shares_count_distinct_vectors():
    X = skewed(400)
    w = distinct_weights(np.concatenate([X, X[:10], X[:10], X[:1]]))
    assert w.sum() == pytest.approx(400) and w[0] == pytest.approx(1 / 4) and w[10] == 1
    with pytest.raises(QuantizeError, match="balance"):
        make_tokenizer("rkmeans", balance=1.5)


def test_plain_rkmeans_saves_no_offsets_like_tokenizers_from_before_balancing(tmp_path):
    X = skewed(300)
    tok = make_tokenizer("rkmeans", levels=2, codebook_size=8, balance=0.0).fit(X)
    tok.save(tmp_path / "tok")
    assert not any(k.startswith("offsets.") for k in load_file(str(tmp_path / "tok" / "tokenizer.safetensors")))
    meta = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    del meta["params"]["balance"]  # as written before the option existed
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(meta))
    loaded = Tokenizer.load(tmp_path / "tok")
    assert loaded.balance == 0 and loaded.tokenizer_id == tok.tokenizer_id
    np.testing.assert_array_equal(loaded.encode(X), tok.encode(X))


def test_seeded_fits_are_reproducible():
    X, _ = clustered(300)
    a = make_tokenizer("rkmeans", codebook_size=16).fit(X, seed=7)
    b = make_tokenizer("rkmeans", codebook_size=16).fit(X, seed=7)
    assert a.tokenizer_id == b.tokenizer_id
    np.testing.assert_array_equal(a.encode(X), b.encode(X))


@pytest.mark.parametrize("method", METHODS)
def test_assign_only_keeps_old_ids_and_never_duplicates(method):
    X, _ = clustered(400)
    old, new = X[:300], X[300:]
    tok = make_tokenizer("rkmeans", levels=3, codebook_size=16).fit(old)
    old_ids = resolve(tok.encode(old), method, tok.last_level_distances(old))
    # New items that are exact copies of old ones are the hardest case: their codes are all taken.
    new = np.concatenate([new, old[:20]])
    new_ids = resolve(tok.encode(new), method, tok.last_level_distances(new), taken=old_ids.tolist())
    everything = np.concatenate([old_ids, new_ids])
    assert collision_stats(everything)["unique_ids"] == len(everything)


def test_assign_only_refuses_ids_of_another_method():
    with pytest.raises(QuantizeError, match="another collision method"):
        resolve(np.zeros((2, 3)), "append", taken=[(0, 0, 0)])


def test_degenerate_inputs():
    X, _ = clustered(50)
    with pytest.raises(QuantizeError, match="identical"):
        make_tokenizer("rkmeans").fit(np.ones((100, 8), np.float32))
    bad = X.copy()
    bad[7, 3] = np.nan
    with pytest.raises(QuantizeError, match="NaN.*row 7"):
        make_tokenizer("rkmeans").fit(bad)
    with pytest.raises(QuantizeError, match="2-D"):
        make_tokenizer("rkmeans").fit(np.zeros((0, 4), np.float32))
    # Fewer items than codes: documented fallback, each level uses at most as many codes as distinct vectors.
    tok = make_tokenizer("rkmeans", levels=3, codebook_size=256, preprocess="none").fit(X)
    assert tok.level_sizes[0] == 50
    ids = resolve(tok.encode(X))
    assert collision_stats(ids)["unique_ids"] == 50
    with pytest.raises(QuantizeError, match="fitted on 16-dimensional"):
        tok.encode(np.zeros((2, 5), np.float32))


def test_rqvae_training_reduces_loss_without_collapse():
    X, labels = clustered(400)
    tok = tiny_rqvae().fit(X, seed=0)
    assert tok.history[-1]["recon"] < 0.7 * tok.history[0]["recon"]
    codes = tok.encode(X)
    for level in range(tok.levels):
        assert len(np.unique(codes[:, level])) > 1
    assert len(np.unique(codes[:, 0])) >= 4


def test_diagnostics_json_and_png(tmp_path):
    X, _ = clustered(300)
    tok = make_tokenizer("rkmeans", levels=3, codebook_size=16).fit(X)
    codes = tok.encode(X)
    ids = resolve(codes)
    diag = diagnose(tok, X, codes, ids, "append")
    json_path, png_path = write_diagnostics(diag, tmp_path)
    saved = json.loads(json_path.read_text())
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert [lv["level"] for lv in saved["per_level"]] == [0, 1, 2]
    assert all(0 < lv["utilisation"] <= 1 and lv["perplexity"] >= 1 for lv in saved["per_level"])
    assert sum(saved["per_level"][0]["items_per_code"]) == 300
    assert saved["duplicate_final_ids"] == 0 and saved["collision_method"] == "append"
    assert 0 <= saved["reconstruction"]["relative"] < 1
    assert saved["before_dedup"]["largest_group"] >= 1 and saved["fit_seconds"] >= 0


# ---- the job ---------------------------------------------------------------------------------------------
def _store_with_vectors(make_config, tmp_path, n=300, **quantize):
    from pipeline.schema import vector_column, vector_family
    from pipeline.store import ItemStore

    cfg = make_config(quantize={"out_dir": str(tmp_path / "tok"), "codebook_size": 16, **quantize})
    store = ItemStore(cfg.store)
    store.create_if_missing()
    ids = [str(i) for i in range(n)]
    store.upsert(pa.table({"item_id": ids, "title": [f"item {i}" for i in ids]}).cast(
        pa.schema([store.schema.field("item_id"), store.schema.field("title")])))
    X, _ = clustered(n)
    X[5] = np.nan
    family = vector_family("text_vec", X.shape[1])
    valid = np.ones(n, bool)
    valid[:3] = False  # three items have no vector yet
    rows = pa.table({"item_id": ids, "text_vec": vector_column(X, valid), "text_vec_model": ["m"] * n,
                     "text_vec_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
                     "text_vec_error": pa.nulls(n, pa.string()), "text_vec_source": ["t"] * n})
    store.write_family(family, rows)
    return cfg, store, X, valid


def test_hybrid_columns_weigh_alike_under_l2():
    rng = np.random.default_rng(0)
    text, collab = rng.normal(size=(50, 8)), 100 * rng.normal(size=(50, 4))  # unrelated norms
    joined = concat_columns([text, collab], unit_rows=True)
    assert joined.shape == (50, 12)
    for part in (joined[:, :8], joined[:, 8:]):
        assert np.allclose(np.linalg.norm(part, axis=1), 1)
    assert np.allclose(joined[:, 8:], collab / np.linalg.norm(collab, axis=1, keepdims=True))
    assert np.array_equal(concat_columns([text, collab]), np.concatenate([text, collab], 1).astype(np.float32))


def test_quantize_config_reaches_the_tokenizer():
    from jobs.quantize import build_tokenizer

    assert build_tokenizer(QuantizeConfig(balance=0.25)).balance == 0.25
    assert build_tokenizer(QuantizeConfig()).balance == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_quantize_job_fit_then_assign_only(make_config, tmp_path, method):
    from jobs.quantize import run_quantize
    from pipeline.schema import vector_column

    cfg, store, X, valid = _store_with_vectors(make_config, tmp_path, collisions=method)
    summary = run_quantize(cfg)
    # 3 items have no vector, and the store nulled the NaN vector of item 5 (with an error record), so it
    # has none either.
    assert summary.done == 296 and summary.failed == 0
    assert store.scan(["text_vec_error"], "item_id = '5'").column(0).to_pylist() == [BAD_VECTOR]
    table = store.scan(["item_id", "semantic_id", "semantic_id_model", "semantic_id_error"])
    assert str(table.schema.field("semantic_id").type) == "list<item: int16>"
    got = {r["item_id"]: r for r in table.to_pylist()}
    assert got["5"]["semantic_id"] is None
    assert got["5"]["semantic_id_error"] is None
    assert all(got[str(i)]["semantic_id"] is None for i in range(3))
    first = {k: tuple(r["semantic_id"]) for k, r in got.items() if r["semantic_id"] is not None}
    assert len(set(first.values())) == len(first) == 296
    assert {r["semantic_id_model"] for k, r in got.items() if k in first} == {summary.model_id}
    assert (tmp_path / "tok" / "diagnostics.png").is_file() and (tmp_path / "tok" / "tokenizer.json").is_file()
    (tag,) = [t for t in store.tags() if t["stage"] == "quantize"]  # the version the job ended at is named
    assert (tag["model"], tag["column"], tag["version"]) == (summary.model_id, "semantic_id", store.table.version)
    # A seeded refit reproduces the very same tokenizer and IDs.
    assert run_quantize(cfg).model_id == summary.model_id
    assert {r["item_id"]: tuple(r["semantic_id"]) for r in store.scan(["item_id", "semantic_id"]).to_pylist()
            if r["semantic_id"] is not None} == first

    # The three new items receive vectors (two of them copies of existing ones); assign-only names them.
    X2 = X.copy()
    X2[0], X2[1] = X[10], X[11]
    store.upsert(pa.table({"item_id": ["0", "1", "2"], "text_vec": vector_column(X2[:3], np.ones(3, bool))})
                 .cast(pa.schema([store.schema.field("item_id"), store.schema.field("text_vec")])), insert_new=False)
    again = run_quantize(cfg, assign_only=True)
    assert again.done == 3 and again.model_id == summary.model_id
    after = {r["item_id"]: r["semantic_id"] for r in store.scan(["item_id", "semantic_id"]).to_pylist()}
    assert all(tuple(after[k]) == v for k, v in first.items())  # old IDs unchanged
    final = [tuple(v) for v in after.values() if v is not None]
    assert len(final) == len(set(final)) == 299
    assert run_quantize(cfg, assign_only=True).done == 0  # nothing left to do


def test_quantize_job_user_errors(make_config, tmp_path):
    from jobs.quantize import main

    cfg, store, _, _ = _store_with_vectors(make_config, tmp_path, n=40)
    assert main(["store.uri=" + cfg.store.uri, f"quantize.out_dir={tmp_path / 'none'}", "--assign-only"]) == 2
    assert main(["store.uri=" + cfg.store.uri, "quantize.columns=[nope]"]) == 2


@pytest.mark.slow
def test_quantize_job_on_amazon_scientific(make_config, ray_local, tmp_path):
    from jobs.embed import run_embed
    from jobs.ingest import run_ingest
    from jobs.quantize import run_quantize
    from tests.helpers import require_shared

    path = require_shared("amazon-scientific")
    cfg = make_config(ingest={"source": "amazon-scientific", "path": str(path), "limit": 600},
                      embed={"image": {"enabled": False}},
                      quantize={"out_dir": str(tmp_path / "tok"), "codebook_size": 32})
    run_ingest(cfg)
    run_embed(cfg)
    summary = run_quantize(cfg)
    assert summary.done > 500
    ids = [tuple(v) for v in ItemStoreScan(cfg)]
    assert len(ids) == len(set(ids)) == summary.done
    diag = json.loads((tmp_path / "tok" / "diagnostics.json").read_text())
    assert diag["duplicate_final_ids"] == 0 and diag["per_level"][0]["utilisation"] > 0.9
    assert (tmp_path / "tok" / "diagnostics.png").stat().st_size > 0


def ItemStoreScan(cfg):  # noqa: N802
    from pipeline.store import ItemStore

    return [v for v in ItemStore(cfg.store).scan(["semantic_id"])["semantic_id"].to_pylist() if v is not None]
