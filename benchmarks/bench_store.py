"""Item store: seerec's `ItemStore` (ingest, a stage's family writes, indexed vector search) against bare LanceDB.

Ingest: a catalog goes into a fresh store the way `run_ingest` writes it, one `ItemStore.upsert` (a
merge_insert keyed on item_id, so re-ingests update and concurrent ingests do not duplicate) of the whole
catalog; the bare side is the loop a user would write, a `table.add` per `store.write_batch_rows` batch into a
fresh table with the same schema, and one `table.add` of everything is timed too. The sides run in
alternating order over a few rounds (medians), so a neighbour's load on a shared machine hits both alike. The
former write path (one upsert per batch, each scanning the growing table) and a re-ingest are timed once.

Family writes: a stage's driver stages flushes of `store.write_batch_rows` rows of its column family and merges
them onto the ingested, finalised catalog once, as a new family and again as a refill of an existing one; the
bare sides are a `table.add` loop of the same rows into a fresh table and LanceDB's own merge_insert per flush
on the same catalog. Flushes alternate sides; medians over `--rounds` fresh stores.

Search: N unit vectors drawn around 200 gaussian cluster centres are written with `write_family`, the store
is finalised (optimize, item_id index, vector index), and 200 held-out queries from the same clusters are
run through `ItemStore.search_vector(k=10)` and a bare `table.search(q).limit(10).to_arrow()` on the same
table, alternating. Recall@10 is against exact numpy cosine top-10, whose latency is reported as well.

    python benchmarks/bench_store.py --rows 100000 --dim 384 --out benchmarks/results/store.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from common import timed, write_result
from lancedb.index import BTree

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
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of ingest and of family writes (alternating order); medians reported")
    parser.add_argument("--skip-per-batch", action="store_true",
                        help="do not also time the former write path (one upsert per write_batch_rows batch)")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-family", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-bare-merge", action="store_true",
                        help="do not time LanceDB's own merge_insert per flush (slow on a large table)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args()

    cfg = load_config(None, ["store.table=items"])
    result = {"benchmark": "store", "settings": {
        "rows": args.rows, "dim": args.dim, "write_batch_rows": cfg.store.write_batch_rows,
        "lancedb": lancedb.__version__, "pyarrow": pa.__version__}}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        if not args.skip_ingest:
            result["ingest"] = bench_ingest(Path(tmp), args.rows, cfg.store.write_batch_rows, args.rounds,
                                            not args.skip_per_batch)
        if not args.skip_family:
            result["family_write"] = bench_family_write(Path(tmp), args.rows, args.dim, cfg.store.write_batch_rows,
                                                        args.rounds, not args.skip_bare_merge)
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


def bench_ingest(tmp: Path, n: int, step: int, rounds: int, per_batch: bool) -> dict:
    """seerec's ingest write against the bare loop a user would write, in alternating order over `rounds`."""
    rows = catalog_rows(n)
    batches = [rows.slice(o, step) for o in range(0, n, step)]

    def fresh_table(name: str):
        return lancedb.connect(str(tmp / name)).create_table("items", schema=catalog_schema())

    def fresh_store(name: str) -> ItemStore:
        store = ItemStore(load_config(None, [f"store.uri={tmp / name}"]).store)
        store.create_if_missing()
        return store

    def bare_loop(r: int) -> None:
        table = fresh_table(f"bare-loop-{r}")
        for batch in batches:
            table.add(batch)

    sides = {
        "seerec": lambda r: fresh_store(f"seerec-{r}").upsert(rows),  # what run_ingest does: one commit
        "bare_loop": bare_loop,
        "bare_one_add": lambda r: fresh_table(f"bare-one-{r}").add(rows),
    }
    seconds = {side: [] for side in sides}
    for r in range(rounds):
        for side in (sorted(sides) if r % 2 == 0 else sorted(sides, reverse=True)):
            seconds[side].append(timed(lambda s=side, r=r: sides[s](r))[0])
    store = ItemStore(load_config(None, [f"store.uri={tmp / 'seerec-0'}"]).store)
    assert store.count() == n and len(set(store.scan([KEY])[KEY].to_pylist())) == n
    reingest = timed(lambda: store.upsert(rows))[0]
    assert store.count() == n

    median = {side: float(np.median(values)) for side, values in seconds.items()}
    out = {
        "batches": len(batches), "rounds": rounds,
        "seconds": {side: round(value, 3) for side, value in median.items()},
        "ratio": round(median["bare_loop"] / median["seerec"], 3),  # seerec rows/s over the bare loop's
        "ratio_vs_one_add": round(median["bare_one_add"] / median["seerec"], 3),
        "seerec_reingest_s": round(reingest, 3),
        "seerec": "ItemStore.upsert of the whole catalog (merge_insert on item_id, update all + insert new), "
                  "as run_ingest does",
        "bare_loop": f"lancedb table.add per batch of store.write_batch_rows={step} (append only, no key check)",
        "bare_one_add": "one lancedb table.add of all rows",
    }
    if per_batch:  # the write path before one commit per catalog, for comparison
        old = fresh_store("seerec-per-batch")
        out["seconds"]["seerec_per_batch"] = round(sum(timed(lambda b=b: old.upsert(b))[0] for b in batches), 3)
    print(f"ingest: {n} catalog rows (bare loop: {len(batches)} batches of {step}); median of {rounds} rounds")
    labels = {"seerec": "seerec ItemStore.upsert (one)", "bare_loop": "bare table.add loop",
              "bare_one_add": "bare table.add (one)", "seerec_per_batch": "seerec upsert per batch (before)"}
    for side, value in out["seconds"].items():
        print(f"  {labels[side]:<34}: {value:>8.2f} s {n / value:>10.0f} rows/s")
    print(f"  ratio seerec/bare loop            : {out['ratio']:>8.3f}")
    print(f"  ratio seerec/one bare add         : {out['ratio_vs_one_add']:>8.3f}")
    print(f"  seerec re-ingest (all updates)    : {reingest:>8.2f} s")
    return out


def family_rows(family, ids: pa.Array, vectors: np.ndarray) -> pa.Table:
    values = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return family.rows(ids, values, "bench", [None] * len(ids), source="{title}")


def bench_family_write(tmp: Path, n: int, dim: int, step: int, rounds: int, bare_merge: bool) -> dict:
    """A stage's writes as its `FamilyWriter` makes them, against a bare `table.add` loop of the same rows.

    seerec stages each flush of `store.write_batch_rows` family rows (`ItemStore.stage_family`) and merges
    them onto the ingested, finalised catalog once (`commit_staged`), which is timed with the flushes. A new
    family is joined on as new columns; a family the table already holds (a re-run with another model) is
    updated with merge_insert, timed as `seerec_refill`. Medians over `rounds` fresh stores; the bare
    merge_insert loop runs in the first round only.
    """
    catalog = catalog_rows(n)
    family = vector_family("text_vec", dim)
    rows = family_rows(family, catalog[KEY], np.random.default_rng(1).standard_normal((n, dim), np.float32))
    flushes = [rows.slice(o, step) for o in range(0, n, step)]

    def one_round(r: int) -> dict:
        store = ItemStore(load_config(None, [f"store.uri={tmp / f'family-seerec-{r}'}"]).store)
        store.create_if_missing()
        store.upsert(catalog)
        store.finalize()
        store.scan([KEY])  # what a stage's pending query does first (and loads Lance)
        bare = lancedb.connect(str(tmp / f"family-bare-{r}")).create_table("items", schema=family.schema())
        sides = {"seerec": lambda f, job: store.stage_family(family, f, job), "bare_add": lambda f, job: bare.add(f)}
        if bare_merge and r == 0:  # timed once is enough
            merge_table = lancedb.connect(str(tmp / "family-merge")).create_table("items", catalog)
            merge_table.create_index(KEY, config=BTree())
            merge_table.add_columns(pa.schema(family.fields()))
            sides["bare_merge"] = lambda f, job: merge_table.merge_insert(KEY).when_matched_update_all().execute(f)

        def stage_run(job: str) -> dict:
            seconds = dict.fromkeys(sides, 0.0)
            for i, flush in enumerate(flushes):  # alternating order, so a neighbour's load hits every side alike
                for side in (sorted(sides) if (i + r) % 2 == 0 else sorted(sides, reverse=True)):
                    seconds[side] += timed(lambda s=side, f=flush: sides[s](f, job))[0]
            seconds["seerec_stage"] = seconds["seerec"]
            seconds["seerec_commit"] = timed(lambda: store.commit_staged(family))[0]
            seconds["seerec"] += seconds["seerec_commit"]
            return seconds

        seconds = stage_run("0" * 32)
        assert store.count(f"`{family.name}` IS NOT NULL") == n == bare.count_rows()
        assert store.staging_tables(family.name) == []
        bare = lancedb.connect(str(tmp / f"family-bare-{r}")).create_table("items", schema=family.schema(),
                                                                            mode="overwrite")
        sides.pop("bare_merge", None)
        refill = stage_run("1" * 32)
        assert store.count(f"`{family.name}` IS NOT NULL") == n == store.count()
        for side in ("seerec", "seerec_stage", "seerec_commit", "bare_add"):
            seconds[f"{side}_refill"] = refill[side]
        for folder in (f"family-seerec-{r}", f"family-bare-{r}", "family-merge"):  # a 1M-row round fills gigabytes
            shutil.rmtree(tmp / folder, ignore_errors=True)
        return seconds

    runs = [one_round(r) for r in range(rounds)]
    seconds = {side: float(np.median([run[side] for run in runs if side in run])) for side in runs[0]}

    out = {
        "flushes": len(flushes), "dim": dim, "rounds": rounds,
        "seconds": {side: round(value, 3) for side, value in seconds.items()},
        "ratio": round(seconds["bare_add"] / seconds["seerec"], 3),
        "ratio_refill": round(seconds["bare_add_refill"] / seconds["seerec_refill"], 3),
        # What writing each row twice (staged, then merged) leaves: the staging appends alone against the bare loop.
        "ratio_stage_only": round(seconds["bare_add"] / seconds["seerec_stage"], 3),
        "seerec": "ItemStore.stage_family per flush (append to the job's staging table) + one commit_staged "
                  "(the new family's columns added in the table's row order)",
        "seerec_stage": "the stage_family appends alone", "seerec_commit": "the commit_staged alone",
        "seerec_refill": "the same onto a table that already holds the family: merge_insert on item_id, one per 128 MB",
        "bare_add": "lancedb table.add of the same family rows per flush into a fresh table (no item rows)",
    }
    if bare_merge:
        out["ratio_vs_bare_merge"] = round(seconds["bare_merge"] / seconds["seerec"], 3)
        out["bare_merge"] = "lancedb merge_insert(item_id).when_matched_update_all() per flush onto the catalog"
    print(f"family write: {n} rows of a {dim}-d vector family in {len(flushes)} flushes of {step}; "
          f"median of {rounds} rounds")
    for side, label in (("seerec", "seerec stage + one commit (new)"), ("seerec_stage", "  of which staging appends"),
                        ("seerec_commit", "  of which the commit"), ("bare_add", "bare table.add loop"),
                        ("bare_merge", "bare merge_insert loop"), ("seerec_refill", "seerec stage + commit (refill)"),
                        ("seerec_commit_refill", "  of which the commit"),
                        ("bare_add_refill", "bare table.add loop (refill)")):
        if side in seconds:
            print(f"  {label:<34}: {seconds[side]:>8.2f} s {n / seconds[side]:>10.0f} rows/s")
    print(f"  ratio seerec/bare add loop        : {out['ratio']:>8.3f}")
    print(f"  ratio seerec/bare add, refill     : {out['ratio_refill']:>8.3f}")
    print(f"  ratio staging appends/bare add    : {out['ratio_stage_only']:>8.3f}")
    if bare_merge:
        print(f"  ratio seerec/bare merge loop      : {out['ratio_vs_bare_merge']:>8.3f}")
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
