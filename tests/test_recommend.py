"""`seerec recommend`: a real tiny run trained on the synthetic topic walks, then every mode and bad input.

The CLI runs in-process through typer's runner (the real app, no subprocess start-up per call); the batch mode
runs a real local Ray Data job and writes real Parquet and LanceDB outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from jobs import cli
from jobs.recommend import main as job_main
from recommenders.experiment import run_train
from recommenders.serve import NO_HISTORY, NOTHING_LEFT, Server
from tests.test_generative import TINY, write_semantic_ids
from tests.test_recommenders import N_ITEMS, N_TOPICS, make_store, run_config, synthetic_frame

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A SASRec run of 2 epochs over the synthetic walks, its store holding the items' titles."""
    tmp = tmp_path_factory.mktemp("recommend")
    make_store(tmp / "store")
    run_train(run_config(tmp, model="sasrec", name="sas", epochs=2, batch_size=64, lr=5e-3))
    return tmp / "runs" / "sas"


def invoke(*args: str):
    return runner.invoke(cli.app, ["recommend", *args])


def user_rows(run_dir, user: str, *flags: str) -> list[dict]:
    result = invoke(str(run_dir), "--user", user, "--json", *flags)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def history_of(user: str) -> set[str]:
    frame = synthetic_frame()
    return set(frame.loc[frame["user_id"] == user, "item_id"])


def test_run_folder_holds_users_and_histories(run_dir):
    users = json.loads((run_dir / "users.json").read_text())
    histories = pq.read_table(run_dir / "histories.parquet")["history"].to_pylist()
    items = json.loads((run_dir / "items.json").read_text())
    assert len(users) == len(histories) == 200
    assert {items[i] for i in histories[users.index("u3")]} == history_of("u3")


def test_one_known_user_json_and_table(run_dir):
    rows = user_rows(run_dir, "u3", "-k", "7")
    assert [r["rank"] for r in rows] == list(range(1, 8))
    assert all(r["user_id"] == "u3" and r["note"] is None for r in rows)
    assert not {r["item_id"] for r in rows} & history_of("u3")  # seen items are excluded by default
    assert all(r["title"] == f"item {r['item_id']}" for r in rows)  # titles from the item store
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    seen = user_rows(run_dir, "u3", "-k", str(N_ITEMS), "--include-seen")
    assert history_of("u3") <= {r["item_id"] for r in seen} and len(seen) == N_ITEMS
    table = invoke(str(run_dir), "--user", "u3", "-k", "3")
    assert table.exit_code == 0 and "top 3 for user u3" in table.stdout and "item " in table.stdout


def test_new_user_from_a_history(run_dir):
    result = invoke(str(run_dir), "--history", "0,6,nope", "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 5 and not {r["item_id"] for r in rows} & {"0", "6"}
    assert all(r["user_id"] is None for r in rows)  # a new user has no id
    assert "nope" in result.stderr and "not in the run's catalog" in result.stderr  # named, on stderr
    # A known user's whole history given as a new user's gets that user's recommendations (SASRec reads the
    # history alone).
    frame = synthetic_frame()
    walk = frame.loc[frame["user_id"] == "u3"].sort_values("timestamp")["item_id"]
    result = invoke(str(run_dir), "--history", ",".join(walk), "-k", "5", "--json")
    as_new = [(r["item_id"], r["rank"]) for r in json.loads(result.stdout)]
    assert as_new == [(r["item_id"], r["rank"]) for r in user_rows(run_dir, "u3", "-k", "5")]


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "nobody"], "user 'nobody' is not in run sas"),
    (["--history", "x,y"], "none of the history's items is in run sas's catalog: x, y"),
    (["--history", " , "], "the history is empty"),
    (["--user", "u3", "-k", "0"], "recommend.k"),
    (["--all"], "name where the recommendations go"),
])
def test_bad_input_is_one_sentence_and_exit_2(run_dir, args, message):
    result = invoke(str(run_dir), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_and_older_run_folders(run_dir, tmp_path):
    result = invoke(str(tmp_path / "none"), "--user", "u3")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.json", "model.pt", "items.json", "config.yaml"):
        (old / name).write_bytes((run_dir / name).read_bytes())
    result = invoke(str(old), "--user", "u3")
    assert result.exit_code == 2 and "older seerec" in result.stderr and "train it again" in result.stderr
    assert invoke(str(run_dir)).exit_code == 2  # no mode given


def test_per_user_notes_instead_of_a_crash(run_dir):
    server = Server.from_run(run_dir)
    everything = np.arange(N_ITEMS)
    rows = server.rows(np.array([0, 1, 2]), [np.array([], np.int64), everything, server.data.histories[2]],
                       ["a", "b", "c"], k=4).to_pylist()
    notes = {r["user_id"]: r["note"] for r in rows if r["note"]}
    assert notes == {"a": NO_HISTORY, "b": NOTHING_LEFT}
    assert [r["rank"] for r in rows if r["user_id"] == "c"] == [1, 2, 3, 4]


def test_a_user_embedding_model_refuses_a_new_user(tmp_path):
    make_store(tmp_path / "store")
    run_train(run_config(tmp_path, model="bpr", name="bpr", epochs=1))
    result = invoke(str(tmp_path / "runs" / "bpr"), "--history", "0,6")
    assert result.exit_code == 2 and "cannot rank a new user" in result.stderr
    assert invoke(str(tmp_path / "runs" / "bpr"), "--user", "u3", "--json").exit_code == 0


def test_all_users_to_parquet_and_lance(run_dir, tmp_path, ray_local):
    out = tmp_path / "recs.parquet"
    result = invoke(str(run_dir), "--all", "--out", str(out), "-k", "5", "recommend.batch_size=64")
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score", "note"]
    assert frame["user_id"].nunique() == 200 and len(frame) == 200 * 5 and frame["note"].isna().all()
    assert all(sorted(r) == [1, 2, 3, 4, 5] for r in frame.groupby("user_id")["rank"].apply(list))
    truth = synthetic_frame().groupby("user_id")["item_id"].apply(set)
    assert not any(row.item_id in truth[row.user_id] for row in frame.itertuples())  # no seen item
    assert list(tmp_path.iterdir()) == [out]  # no partial file left beside it
    # The same through the job entry point, into a LanceDB folder (one commit at the end).
    lance_dir = tmp_path / "recs-db"
    assert job_main([f"recommend.run_dir={run_dir}", f"recommend.out={lance_dir}", "recommend.k=3",
                     "recommend.exclude_seen=false"]) == 0
    table = lancedb.connect(lance_dir).open_table("recommendations").to_arrow().to_pandas()
    assert len(table) == 600 and set(table["rank"]) == {1, 2, 3}
    assert set(table["item_id"]) <= {str(i) for i in range(N_ITEMS)}
    # `store`: a table beside the items in the run's item store.
    assert job_main([f"recommend.run_dir={run_dir}", "recommend.out=store", "recommend.table=recs"]) == 0
    store_db = lancedb.connect(run_dir.parents[1] / "store")
    assert store_db.open_table("recs").count_rows() == 2000


def test_tiger_recommends_an_item_that_got_a_semantic_id_after_training(tmp_path):
    store = make_store(tmp_path / "store")
    write_semantic_ids(store, {str(i): [i % N_TOPICS, (i // N_TOPICS) % 4, (i // N_TOPICS) // 4]
                               for i in range(N_ITEMS)})
    run_train(run_config(tmp_path, model="tiger", name="tg", epochs=1, lr=3e-3, batch_size=64,
                         tiger={**TINY, "codebook_size": 8, "beam_size": N_ITEMS + 1}))
    run = tmp_path / "runs" / "tg"
    make_store(tmp_path / "store", ids=["new-1"])  # a new item, not yet quantized: not recommendable
    assert "new-1" not in Server.from_run(run).item_ids
    write_semantic_ids(store, {"new-1": [0, 7, 0]})  # as `seerec quantize --assign-only` gives it an ID
    rows = user_rows(run, "u3", "-k", str(N_ITEMS + 1), "--include-seen")
    assert "new-1" in {r["item_id"] for r in rows}
    assert json.loads((run / "items.json").read_text())[-1] != "new-1"  # the run folder itself is unchanged


def test_a_run_stopped_while_improving_says_so(tmp_path, caplog):
    make_store(tmp_path / "store")
    still = run_train(run_config(tmp_path, model="sasrec", name="short", epochs=1)).metrics
    assert still["best_epoch"] == still["epochs_run"] == 1
    saved = json.loads((tmp_path / "runs" / "short" / "metrics.json").read_text())
    assert saved["warnings"] and "still improving" in saved["warnings"][0] and "train.epochs" in saved["warnings"][0]
    assert any("still improving" in m for m in caplog.messages)
    untrained = run_train(run_config(tmp_path, model="popularity", name="pop")).metrics
    assert untrained["warnings"] == []


def test_a_comparison_wider_than_the_terminal_keeps_the_key_columns(monkeypatch, tmp_path):
    rows = [{"model": m, "features": "-", "valid_ndcg@10": 0.1, **{f"test_{k}@{n}": 0.2 for k in ("recall", "ndcg")
                                                                   for n in (5, 10, 20)},
             "best_epoch": 3, "seconds": 1.5, "run": f"compare/{m}"} for m in ("popularity", "sasrec")]
    markdown = Path("runs/compare/compare.md")
    for width, wide in ((110, False), (400, True)):
        console = Console(width=width, record=True, file=open(tmp_path / f"out{width}.txt", "w"))  # noqa: SIM115
        monkeypatch.setattr(cli, "console", console)
        cli.print_comparison(rows, markdown)
        text = console.export_text()
        assert ("test_recall@20" in text) is wide and ("test_ndcg@10" in text or not wide)
        assert (str(markdown) in text) is not wide


def test_submit_recommend_ships_the_batch_job():
    from jobs.submit import submission
    from pipeline.config import ConfigError, load_config
    from tests.helpers import REPO

    cfg = load_config(None, ["recommend.run_dir=runs/x", "recommend.out=recs.parquet"])
    assert submission("recommend", "", [], REPO, cfg, {}, [])["entrypoint"] == \
        "python -m jobs.recommend --config-env SEEREC_CONFIG_YAML"
    with pytest.raises(ConfigError, match="recommend has no flag --all; it takes none of its own"):
        submission("recommend", "", ["--all"], REPO, cfg, {}, [])


def test_a_batch_that_dies_midway_leaves_the_previous_output_and_no_partial_file(tmp_path):
    from jobs.recommend import write_parquet
    from recommenders.serve import OUTPUT_SCHEMA

    one = pa.table({"user_id": ["u1"], "rank": pa.array([1], pa.int32()), "item_id": ["7"],
                    "score": pa.array([0.5], pa.float32()), "note": pa.nulls(1, pa.string())}, schema=OUTPUT_SCHEMA)
    out = tmp_path / "recs.parquet"
    assert write_parquet(iter([one]), out, 1) == (1, 0)

    def dying():
        yield one
        raise RuntimeError("the actor's node went away")

    with pytest.raises(RuntimeError):
        write_parquet(dying(), out, 2)
    assert list(tmp_path.iterdir()) == [out] and pq.read_table(out).num_rows == 1
