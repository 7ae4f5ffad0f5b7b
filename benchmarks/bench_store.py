"""Item store: seerec's `ItemStore` (ingest upserts, indexed vector search) against bare LanceDB calls.

Ingest: catalog rows go into a fresh store in batches of `store.write_batch_rows`, through `ItemStore.upsert`
(a merge_insert keyed on item_id) on one side and a bare `table.add` of the same Arrow batches into a fresh
table with the same schema on the other. Batches alternate between the sides, so a neighbour's load on a
shared machine hits both alike. A second upsert of the same rows (a re-ingest, all updates) is timed too.

Search: N unit vectors drawn around 200 gaussian cluster centres are written with `write_family`, the store
is finalised (optimize, item_id index, vector index), and 200 held-out queries from the same clusters are
run through `ItemStore.search_vector(k=10)` and a bare `table.search(q).limit(10).to_arrow()` on the same
table, alternating. Recall@10 is against exact numpy cosine top-10, whose latency is reported as well.

    python benchmarks/bench_store.py --rows 100000 --dim 384 --out benchmarks/results/store.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from common import timed, write_result

from pipeline.config import load_config
from pipeline.schema import KEY, catalog_schema, vector_family
from pipeline.store import ItemStore

INDEX_TYPES = ("ivf_hnsw_sq", "ivf_pq")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="catalog rows and vectors in the store")
    parser.add_argument("--dim", type=int, default=384, help="vector width")
    parser.add_argument("--queries", type=int, default=200, help="search queries per index type")
    parser.add_argument("--clusters", type=int, default=200, help="gaussian clusters the vectors are drawn from")
    parser.add_argument("--index-types", nargs="+", choices=INDEX_TYPES, default=list(INDEX_TYPES))
    parser.add_argument("--refine-factor", type=int, nargs="*", default=[10, 20],
                        help="also measure ivf_pq search with store.search_refine_factor set to each of these "
                             "(the bare baseline gets the same refine_factor)")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()

    cfg = load_config(None, ["store.table=items"])
    result = {"benchmark": "store", "settings": {
        "rows": args.rows, "dim": args.dim, "write_batch_rows": cfg.store.write_batch_rows,
        "lancedb": lancedb.__version__, "pyarrow": pa.__version__}}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        if not args.skip_ingest:
            result["ingest"] = bench_ingest(Path(tmp), args.rows, cfg.store.write_batch_rows)
        if not args.skip_search:
            result["search"] = bench_search(Path(tmp), args)
    if args.out:
        write_result(args.out, result)
        print(f"wrote {args.out}")


# ---- ingest -----------------------------------------------------------------------------------------
def catalog_rows(n: int, seed: int = 0) -> pa.Table:
    """Catalog rows shaped like a MicroLens ingest: video items with a title and a small metadata JSON."""
    rng = np.random.default_rng(seed)
    words = np.array(["the", "a", "cat", "dog", "song", "cook", "travel", "dance", "funny", "baby", "game",
                      "car", "street", "night", "food", "news"])
    titles = [" ".join(rng.choice(words, size=k)) for k in rng.integers(3, 12, size=n)]
    now = datetime.now(UTC)
    return pa.table({
        KEY: [str(100_000 + i) for i in range(n)],
        "media_uri": [f"/data/microlens/videos/{100_000 + i}.mp4" for i in range(n)],
        "media_type": ["video"] * n,
        "title": titles,
        "metadata": [f'{{"line": {i + 2}}}' for i in range(n)],
        "ingest_source": ["microlens"] * n,
        "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "ingest_error": pa.nulls(n, pa.string()),
    }, schema=catalog_schema())


def bench_ingest(tmp: Path, n: int, step: int) -> dict:
    rows = catalog_rows(n)
    batches = [rows.slice(o, step) for o in range(0, n, step)]
    store = ItemStore(load_config(None, [f"store.uri={tmp / 'ingest-seerec'}"]).store)
    store.create_if_missing()
    bare = lancedb.connect(str(tmp / "ingest-bare")).create_table("items", schema=catalog_schema())

    seconds = {"seerec": 0.0, "baseline": 0.0}
    sides = {"seerec": lambda b: store.upsert(b), "baseline": lambda b: bare.add(b)}
    for i, batch in enumerate(batches):
        for side in sorted(sides, reverse=i % 2 == 1):  # alternate which side goes first
            seconds[side] += timed(lambda s=side, b=batch: sides[s](b))[0]
    assert store.count() == bare.count_rows() == n
    reingest = sum(timed(lambda b=b: store.upsert(b))[0] for b in batches)
    assert store.count() == n

    out = {
        "batches": len(batches),
        "seerec_rows_per_s": round(n / seconds["seerec"], 1),
        "baseline_rows_per_s": round(n / seconds["baseline"], 1),
        "ratio": round(seconds["baseline"] / seconds["seerec"], 3),  # seerec rows/s over baseline rows/s
        "seerec_reingest_rows_per_s": round(n / reingest, 1),
        "seconds": {"seerec": round(seconds["seerec"], 3), "baseline": round(seconds["baseline"], 3),
                    "seerec_reingest": round(reingest, 3)},
        "seerec": "ItemStore.upsert (merge_insert on item_id, update all + insert new) per batch",
        "baseline": "lancedb table.add per batch (append only, no key check)",
    }
    print(f"ingest: {n} catalog rows in {len(batches)} batches of {step}")
    print(f"  seerec ItemStore.upsert        : {out['seerec_rows_per_s']:>10.0f} rows/s")
    print(f"  bare lancedb table.add         : {out['baseline_rows_per_s']:>10.0f} rows/s")
    print(f"  ratio seerec/baseline          : {out['ratio']:>10.3f}")
    print(f"  seerec re-ingest (all updates) : {out['seerec_reingest_rows_per_s']:>10.0f} rows/s")
    return out


# ---- search -----------------------------------------------------------------------------------------
def clustered_unit_vectors(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    """Points around random centres, normalised: each point's cosine to its centre is about 1/sqrt(1+spread^2)."""
    dim = centres.shape[1]
    labels = rng.integers(0, len(centres), size=n)
    points = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def bench_search(tmp: Path, args: argparse.Namespace) -> dict:
    n, dim = args.rows, args.dim
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = clustered_unit_vectors(rng, centres, n, spread=1.0)
    queries = clustered_unit_vectors(rng, centres, args.queries, spread=1.0)
    ids = np.array([str(100_000 + i) for i in range(n)])

    started = time.perf_counter()
    store = ItemStore(load_config(None, [f"store.uri={tmp / 'search'}", "store.index_min_rows=256"]).store)
    store.create_if_missing()
    catalog = catalog_rows(n)
    family = vector_family("text_vec", dim)
    chunk = 20_000
    for o in range(0, n, chunk):
        store.upsert(catalog.slice(o, chunk))
    for o in range(0, n, chunk):
        part = vectors[o:o + chunk]
        m = len(part)
        store.write_family(family, pa.table({
            KEY: ids[o:o + chunk],
            "text_vec": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim),
            "text_vec_model": ["bench"] * m,
            "text_vec_at": pa.array([datetime.now(UTC)] * m, pa.timestamp("us", tz="UTC")),
            "text_vec_error": pa.nulls(m, pa.string()),
            "text_vec_source": ["{title}"] * m,
        }))
    store._retry(lambda: store.table.optimize(), "optimize")  # what finalize() does before indexing
    print(f"search: {n} vectors x {dim} around {args.clusters} clusters, written in "
          f"{time.perf_counter() - started:.1f}s; {len(queries)} queries, k=10")

    # Exact cosine top-10 (vectors are unit length, so the dot product is the cosine).
    def exact(q: np.ndarray) -> np.ndarray:
        scores = vectors @ q
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    truth = [set(ids[exact(q)]) for q in queries]
    brute = np.array([timed(lambda q=q: exact(q))[0] for q in queries])

    out = {"brute_force_numpy_ms": _percentiles(brute), "index": {}}
    print(f"  {'index':<12} {'side':<32} {'p50 ms':>8} {'p95 ms':>8} {'recall@10':>10}")
    print(f"  {'(none)':<12} {'numpy brute force (exact)':<32} {out['brute_force_numpy_ms']['p50']:>8.2f} "
          f"{out['brute_force_numpy_ms']['p95']:>8.2f} {1.0:>10.3f}")
    for index_type in args.index_types:
        store.cfg.index_type = index_type
        build = timed(lambda: store.ensure_vector_index("text_vec"))[0]
        runs = [("default", {})]
        if index_type == "ivf_pq":
            runs += [(f"refine_factor={r}", {"search_refine_factor": r}) for r in args.refine_factor]
        for label, knobs in runs:
            for key, value in knobs.items():
                setattr(store.cfg, key, value)
            entry = search_sides(store, queries, truth)
            entry["build_s"] = round(build, 2)
            entry["ratio_p50"] = round(entry["seerec_ms"]["p50"] / entry["baseline_ms"]["p50"], 3)
            out["index"][index_type if label == "default" else f"{index_type} {label}"] = entry
            name = index_type if label == "default" else f"{index_type}+rf{knobs['search_refine_factor']}"
            print(f"  {name:<12} {'seerec ItemStore.search_vector':<32} {entry['seerec_ms']['p50']:>8.2f} "
                  f"{entry['seerec_ms']['p95']:>8.2f} {entry['seerec_recall_at_10']:>10.3f}")
            print(f"  {'':<12} {'bare table.search().limit(10)':<32} {entry['baseline_ms']['p50']:>8.2f} "
                  f"{entry['baseline_ms']['p95']:>8.2f} {entry['baseline_recall_at_10']:>10.3f}")
            print(f"  {'':<12} ratio seerec/baseline p50 latency {entry['ratio_p50']:.3f}; index built in {build:.1f}s")
            for key in knobs:
                setattr(store.cfg, key, None)
    return out


def search_sides(store: ItemStore, queries: np.ndarray, truth: list[set]) -> dict:
    table = store.table
    sides = {
        "seerec": lambda q: store.search_vector("text_vec", q, k=10)[KEY].to_pylist(),
        "baseline": lambda q: _bare_query(table, q, store.cfg.search_refine_factor).to_arrow()[KEY].to_pylist(),
    }
    for q in queries[:10]:  # warm-up: index pages, query planning
        for fn in sides.values():
            fn(q)
    latency = {side: [] for side in sides}
    hits = dict.fromkeys(sides, 0)
    for i, q in enumerate(queries):
        for side in sorted(sides, reverse=i % 2 == 1):
            started = time.perf_counter()
            found = sides[side](q)
            latency[side].append(time.perf_counter() - started)
            hits[side] += len(truth[i] & set(found))
    k = 10 * len(queries)
    return {"seerec_ms": _percentiles(np.array(latency["seerec"])),
            "baseline_ms": _percentiles(np.array(latency["baseline"])),
            "seerec_recall_at_10": round(hits["seerec"] / k, 4),
            "baseline_recall_at_10": round(hits["baseline"] / k, 4)}


def _bare_query(table, q: np.ndarray, refine_factor: int | None):
    query = table.search(q).limit(10)
    return query.refine_factor(refine_factor) if refine_factor else query


def _percentiles(seconds: np.ndarray) -> dict:
    return {"p50": round(float(np.percentile(seconds, 50)) * 1000, 3),
            "p95": round(float(np.percentile(seconds, 95)) * 1000, 3)}


if __name__ == "__main__":
    main()
