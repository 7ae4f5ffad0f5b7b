"""The explorer under load: `seerec explore` over a 100k-item store, against bare LanceDB queries of the same data.

The store holds N synthetic catalog rows with real vectors: unit 384-d `text_vec` vectors drawn around 200
gaussian cluster centres (recorded as made by the config's MiniLM, so text queries are embedded by the real
encoder), a description family, and 3-level semantic IDs, finalised as a stage finalises it (item_id index,
IVF-HNSW-SQ vector index). The explorer runs as its own process (`python -m jobs.cli explore`) and a small
httpx client measures it over HTTP:

- item page: sequential GETs of random item pages (the page reads the row, the neighbours per vector column,
  the items sharing each semantic-ID prefix, and renders), p50/p99;
- search: the catalog page with a text query (MiniLM embeds it, then an indexed vector search), p50 after
  warm-up requests;
- throughput: item pages from 8 concurrent clients, requests per second.

The baseline is what those pages must ask LanceDB at the least, in the benchmark's own process on the same
table: the row by item_id plus a `table.search(vector).limit(k)` for its neighbours (and, for search, the
MiniLM encode plus one search). The two sides alternate request by request. The headline is the item page's
p50 over the bare queries' p50: the cost of HTTP, templates and the rest of the page on top of the queries it
needs. For throughput the bare side is 8 threads, each running the item page's bare queries back to back for
the same items; the two loads alternate in halves (explorer, bare, bare, explorer), and the ratio is the bare
queries' rate over the explorer's pages' rate (above 1: the explorer serves fewer, as the latency ratios).

    .venv/bin/python benchmarks/bench_explore.py --rows 100000 --out benchmarks/results/explore.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, SimpleQueue

import httpx
import lancedb
import numpy as np
import pyarrow as pa
import yaml
from common import REPO, write_result

from extractors.embed import TextEmbedder, text_model_id
from pipeline.config import validate_config
from pipeline.schema import KEY, catalog_schema, description_family, semantic_id_family, vector_family
from pipeline.store import ItemStore

QUERIES = ["a cat playing with a ball", "street food at night", "a funny dancing baby", "cooking pasta",
           "a car race in the rain", "travel in the mountains", "news about a football game", "a dog on a beach"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--item-requests", type=int, default=300)
    parser.add_argument("--search-requests", type=int, default=60)
    parser.add_argument("--concurrent-requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "explore.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-explore-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        cfg = build_store(tmp, args.rows, args.dim)
        build_s = time.perf_counter() - started
        print(f"built a {args.rows}-item store in {build_s:.0f}s")
        result = measure(tmp, cfg, args)
    result.update(rows=args.rows, dim=args.dim, store_build_s=round(build_s, 1),
                  clients=args.clients)
    write_result(args.out, result)
    item, bare = result["item_page_ms"], result["bare_item_queries_ms"]
    print(f"item page p50 {item['p50']} ms / p99 {item['p99']} ms; bare LanceDB row + neighbours p50 {bare['p50']} ms; "
          f"ratio {result['item_page_overhead_ratio']}x")
    print(f"search page p50 {result['search_page_ms']['p50']} ms; bare encode + search p50 "
          f"{result['bare_search_ms']['p50']} ms; ratio {result['search_overhead_ratio']}x")
    print(f"{result['item_pages_per_s']} item pages/s at {args.clients} concurrent clients; bare LanceDB row + "
          f"neighbours {result['bare_item_queries_per_s']}/s; ratio {result['throughput_overhead_ratio']}x")


def build_store(tmp: Path, n: int, dim: int):
    cfg = validate_config({"store": {"uri": str(tmp / "store")}, "media": {"roots": [str(tmp / "media")]}})
    (tmp / "media").mkdir()
    store = ItemStore(cfg.store)
    store.create_if_missing()
    rng = np.random.default_rng(0)
    words = np.array(["the", "a", "cat", "dog", "song", "cook", "travel", "dance", "funny", "baby", "game",
                      "car", "street", "night", "food", "news"])
    ids = [str(100_000 + i) for i in range(n)]
    now = datetime.now(UTC)
    store.upsert(pa.table({
        KEY: ids, "media_uri": pa.nulls(n, pa.string()), "media_type": ["text"] * n,
        "title": [" ".join(rng.choice(words, size=k)) for k in rng.integers(3, 12, size=n)],
        "metadata": [f'{{"line": {i + 2}}}' for i in range(n)], "ingest_source": ["bench"] * n,
        "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")), "ingest_error": pa.nulls(n, pa.string()),
    }, schema=catalog_schema()))
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, size=n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    text = vector_family(cfg.embed.text.column, skippable=True)
    batch = {KEY: np.array(ids, dtype=object), "vector": vectors, "error": np.full(n, None, dtype=object)}
    rows = text.batch_rows(batch, "vector", text_model_id(cfg.embed.text), source="{title}")
    store.write_family(text.of_rows(rows), rows)
    described = description_family()
    store.write_family(described, described.rows(pa.array(ids), pa.array([f"a short clip, number {i}" for i in ids]),
                                                 "bench-model", [None] * n, prompt_id="video-v1"))
    codes = np.stack([rng.integers(0, 64, size=n) for _ in range(3)], axis=1).astype(np.int16)
    sid = semantic_id_family()
    store.write_family(sid, sid.rows(pa.array(ids), pa.array(codes.tolist(), pa.list_(pa.int16())), "bench-ids",
                                     [None] * n))
    store.finalize([cfg.embed.text.column])
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return cfg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(tmp: Path, cfg, args) -> dict:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "jobs.cli", "explore", "-c", str(tmp / "config.yaml"),
                               "--port", str(port), "--cache", str(tmp / "thumbs")], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    bare = Bare(cfg)
    try:
        wait_until_up(base, server)
        rng = np.random.default_rng(1)
        items = [str(100_000 + i) for i in rng.integers(0, args.rows, size=args.item_requests)]
        queries = [QUERIES[i % len(QUERIES)] for i in range(args.search_requests)]
        latency: dict[str, list[float]] = {"item": [], "bare_item": [], "search": [], "bare_search": []}
        with httpx.Client(base_url=base, timeout=60) as client:
            for item in items[:10]:  # warm-up: the semantic-ID matrix is read on the first item page
                client.get(f"/items/{item}").raise_for_status()
                bare.item(item)
            for query in QUERIES:
                client.get("/", params={"q": query}).raise_for_status()
                bare.search(query)
            # The sides alternate request by request (and which goes first), so a neighbour's load on a shared
            # machine hits both alike.
            for n, item in enumerate(items):
                sides = [("item", lambda i=item: timed_get(client, f"/items/{i}")),
                         ("bare_item", lambda i=item: bare.item(i))]
                for name, run in sides[::1 if n % 2 else -1]:
                    latency[name].append(run())
            for n, query in enumerate(queries):
                sides = [("search", lambda q=query: timed_get(client, "/", params={"q": q})),
                         ("bare_search", lambda q=query: bare.search(q))]
                for name, run in sides[::1 if n % 2 else -1]:
                    latency[name].append(run())
        concurrent = both_loads(base, bare, [str(100_000 + i) for i in
                                             rng.integers(0, args.rows, size=args.concurrent_requests)], args.clients)
    finally:
        server.terminate()
        server.wait(30)
    shown = {name: percentiles(values) for name, values in latency.items()}
    return {"item_page_ms": shown["item"], "bare_item_queries_ms": shown["bare_item"],
            "item_page_overhead_ratio": round(shown["item"]["p50"] / shown["bare_item"]["p50"], 2),
            "search_page_ms": shown["search"], "bare_search_ms": shown["bare_search"],
            "search_overhead_ratio": round(shown["search"]["p50"] / shown["bare_search"]["p50"], 2),
            "item_pages_per_s": concurrent["explorer"], "bare_item_queries_per_s": concurrent["bare"],
            "throughput_overhead_ratio": round(concurrent["bare"] / concurrent["explorer"], 2)}


def wait_until_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the explorer exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/stages", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the explorer did not start")


def timed_get(client: httpx.Client, url: str, **kwargs) -> float:
    started = time.perf_counter()
    client.get(url, **kwargs).raise_for_status()
    return (time.perf_counter() - started) * 1000


def both_loads(base: str, bare: Bare, items: list[str], clients: int) -> dict[str, float]:
    """Requests per second of each side at `clients` concurrent clients over the same items, in halves ordered
    explorer, bare, bare, explorer so that a shared machine's drift in load hits both alike."""
    half = len(items) // 2
    seconds = {"explorer": 0.0, "bare": 0.0}
    runs = {"explorer": lambda part: asyncio.run(load(base, part, clients)),
            "bare": lambda part: bare_load(bare, part, clients)}
    for part, order in ((items[:half], ("explorer", "bare")), (items[half:], ("bare", "explorer"))):
        for side in order:
            seconds[side] += runs[side](part)
    return {side: round(len(items) / s, 1) for side, s in seconds.items()}


async def load(base: str, items: list[str], clients: int) -> float:
    """Seconds to fetch the items' pages with `clients` requests in flight at all times."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            (await client.get(f"/items/{queue.get_nowait()}")).raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - started


def bare_load(bare: Bare, items: list[str], clients: int) -> float:
    """Seconds to run `Bare.item` for the items from `clients` threads, each taking the next item as soon as its
    last is done (the explorer answers its pages from a thread pool over the same LanceDB API)."""
    queue: SimpleQueue[str] = SimpleQueue()
    for item in items:
        queue.put(item)

    def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except Empty:
                return
            bare.item(item)

    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        for done in [pool.submit(worker) for _ in range(clients)]:
            done.result()
        return time.perf_counter() - started


class Bare:
    """The least LanceDB work the same pages need, on the same table: the row and its neighbours; the query's
    encode and one search. Each call returns its milliseconds."""

    def __init__(self, cfg):
        self.table = lancedb.connect(cfg.store.uri).open_table(cfg.store.table)
        self.column = cfg.embed.text.column
        self.encoder = TextEmbedder(cfg.embed.text.model_copy(update={"device": "cpu"}))

    def item(self, item: str) -> float:
        started = time.perf_counter()
        row = self.table.search().where(f"{KEY} = '{item}'").limit(1).to_arrow()
        vector = row[self.column][0].values.to_numpy()
        self.table.search(vector, vector_column_name=self.column).distance_type("cosine").limit(9).to_arrow()
        return (time.perf_counter() - started) * 1000

    def search(self, query: str) -> float:
        started = time.perf_counter()
        vector = self.encoder.encode([query])[0]
        self.table.search(vector, vector_column_name=self.column).distance_type("cosine").limit(48).to_arrow()
        return (time.perf_counter() - started) * 1000


def percentiles(ms: list[float]) -> dict:
    values = np.array(ms)
    return {"p50": round(float(np.percentile(values, 50)), 2), "p99": round(float(np.percentile(values, 99)), 2),
            "n": len(ms)}


if __name__ == "__main__":
    main()
