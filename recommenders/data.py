"""Interaction data: loaders for the common formats, one `Interactions` structure, and the splits.

Every loader returns a frame of (user, item, timestamp) strings/ints in file order; `build_interactions`
turns it into index maps and time-ordered per-user sequences, optionally over the item store's items
(`item_universe`), so that every store item is rankable and interactions with unknown items are reported.

Splits (all produce the same `Split`: per-user training sequences plus a validation and a test `EvalSet`):

- leave-one-out: the last item of each user is test, the second-to-last validation, the rest training.
- temporal: one global time cut. Interactions before the `valid_at` quantile of all timestamps train; each
  user's first interaction in [valid_at, test_at) is a validation target and their first one after
  `test_at` a test target, with everything of that user before it as history.
- cold-start: a random share of items is held out entirely (half for validation, half for test); their
  interactions never reach training. A user's first held-out item that follows at least one training item
  is the target, with the training items before it as history.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.catalogs import CatalogError, read_atomic_file
from pipeline.errors import SeerecError

log = logging.getLogger("seerec.recommenders")


class RecommenderError(SeerecError, ValueError):
    """Bad recommender input (data, features, checkpoint) the user must fix; shown as one sentence."""


FORMATS = ("s3rec", "inter-json", "pairs-csv", "recbole", "table")


# ---- loaders ---------------------------------------------------------------------------------------------
def load_s3rec(path: str | Path) -> pd.DataFrame:
    """`user item item ...` per line, items in time order (S3-Rec's Beauty.txt); order stands in for time."""
    users, items = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            users.extend([parts[0]] * (len(parts) - 1))
            items.extend(parts[1:])
    return pd.DataFrame({"user_id": users, "item_id": items})


def load_inter_json(path: str | Path) -> pd.DataFrame:
    """`{user: [items in time order]}` (e.g. Scientific.inter.json)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise RecommenderError(f"{path} must hold a JSON object mapping each user to a list of items")
    users = [str(u) for u, seq in data.items() for _ in seq]
    items = [str(i) for seq in data.values() for i in seq]
    return pd.DataFrame({"user_id": users, "item_id": items})


def load_table(path: str | Path, columns: tuple[str, str, str] = ("user_id", "item_id", "timestamp")) -> pd.DataFrame:
    """Parquet or CSV with user, item and (optional) timestamp columns, renamed to user_id/item_id/timestamp."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, dtype={columns[0]: str, columns[1]: str})
    user, item, time = columns
    missing = [c for c in (user, item) if c not in frame.columns]
    if missing:
        raise RecommenderError(f"{path.name} has no column {missing[0]!r}; it needs {user}, {item} and "
                               f"optionally {time}")
    out = pd.DataFrame({"user_id": frame[user].astype(str), "item_id": frame[item].astype(str)})
    if time in frame.columns:
        out["timestamp"] = pd.to_numeric(frame[time], errors="coerce")
        if out["timestamp"].isna().any():
            raise RecommenderError(f"{path.name} has {int(out['timestamp'].isna().sum())} timestamps that are not "
                                   "numbers")
    return out


def load_pairs_csv(path: str | Path) -> pd.DataFrame:
    """MicroLens `MicroLens-100k_pairs.csv`: user,item,timestamp."""
    return load_table(path, ("user", "item", "timestamp"))


def load_recbole_inter(path: str | Path) -> pd.DataFrame:
    """A RecBole atomic `.inter` file: `user_id:token`, `item_id:token` and optional `timestamp:float` fields."""
    path = Path(path)
    try:
        names, records, rejected = read_atomic_file(path)
    except CatalogError as exc:
        raise RecommenderError(str(exc)) from None
    missing = [field for field in ("user_id", "item_id") if field not in names]
    if missing:
        raise RecommenderError(f"{path.name} has no {missing[0]!r} field; a RecBole .inter file needs user_id and "
                               f"item_id (and optionally timestamp), it has {', '.join(names)}")
    if rejected:
        raise RecommenderError(f"{len(rejected)} rows of {path.name} cannot be read, e.g. {rejected[0]}")
    rows = [record for _, record in records]
    frame = pd.DataFrame({"user_id": [r["user_id"] for r in rows], "item_id": [r["item_id"] for r in rows]})
    if "timestamp" in names:
        frame["timestamp"] = pd.to_numeric(pd.Series([r["timestamp"] for r in rows], dtype=object), errors="coerce")
        if frame["timestamp"].isna().any():
            raise RecommenderError(f"{path.name} has {int(frame['timestamp'].isna().sum())} timestamps that are "
                                   "not numbers")
    return frame


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".inter.json"):
        return "inter-json"
    if name.endswith(".txt"):
        return "s3rec"
    if name.endswith("pairs.csv"):
        return "pairs-csv"
    if path.suffix == ".inter":
        return "recbole"
    if path.suffix in (".csv", ".parquet"):
        return "table"
    raise RecommenderError(f"cannot tell the interaction format of {path.name}; set train.data.format")


def load_frame(path: str | Path | None, fmt: str = "auto") -> pd.DataFrame:
    if path is None:
        raise RecommenderError("no interaction file given; set train.data.path")
    path = Path(path)
    if not path.is_file():
        raise RecommenderError(f"interaction file {path} does not exist")
    fmt = detect_format(path) if fmt == "auto" else fmt
    loader = {"s3rec": load_s3rec, "inter-json": load_inter_json, "pairs-csv": load_pairs_csv,
              "recbole": load_recbole_inter, "table": load_table}[fmt]
    frame = loader(path)
    if frame.empty:
        raise RecommenderError(f"interaction file {path} holds no interactions")
    return frame


# ---- the structure -------------------------------------------------------------------------------------
def id_sort_key(value: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then the rest alphabetically: stable, readable item indexes."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


@dataclass
class Interactions:
    user_ids: np.ndarray  # index -> user id (str)
    item_ids: np.ndarray  # index -> item id (str); the ranking is over all of these
    sequences: list[np.ndarray]  # per user: item indexes in time order
    timestamps: list[np.ndarray] | None = None  # per user, aligned with sequences; None if the file has none
    report: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))


def build_interactions(frame: pd.DataFrame, item_universe: list[str] | None = None, min_user_interactions: int = 3,
                       short_users: str = "error") -> Interactions:
    """Index a (user_id, item_id[, timestamp]) frame; rows keep file order within equal timestamps."""
    if frame.empty:
        raise RecommenderError("the interaction data is empty")
    report: dict = {"interactions_read": len(frame), "users_read": int(frame["user_id"].nunique())}
    if item_universe is not None:
        item_ids = np.array(sorted(set(item_universe), key=id_sort_key), dtype=object)
        known = frame["item_id"].isin(set(item_ids))
        missing = int((~known).sum())
        report["missing_from_store"] = missing
        report["missing_items"] = int(frame.loc[~known, "item_id"].nunique())
        if missing:
            log.warning("%d interactions (%d distinct items) name items missing from the store; they are dropped",
                        missing, report["missing_items"])
        frame = frame[known]
        if frame.empty:
            raise RecommenderError("no interaction names an item of the store; check that the store holds this "
                                   "dataset's catalog (item_id values must match)")
    else:
        item_ids = np.array(sorted(frame["item_id"].unique(), key=id_sort_key), dtype=object)
    counts = frame.groupby("user_id", sort=False).size()
    short = counts[counts < min_user_interactions]
    if len(short):
        if short_users == "error":
            raise RecommenderError(f"{len(short)} users have fewer than {min_user_interactions} interactions "
                                   f"(e.g. user {short.index[0]!r}); set train.data.short_users=drop to drop them")
        log.warning("dropped %d users with fewer than %d interactions", len(short), min_user_interactions)
        frame = frame[~frame["user_id"].isin(set(short.index))]
        if frame.empty:
            raise RecommenderError(f"no user has at least {min_user_interactions} interactions")
    report["dropped_short_users"] = int(len(short))
    user_codes, user_ids = pd.factorize(frame["user_id"], sort=False)
    item_index = pd.Index(item_ids)
    item_codes = item_index.get_indexer(frame["item_id"])
    has_time = "timestamp" in frame.columns
    times = frame["timestamp"].to_numpy(np.int64) if has_time else np.arange(len(frame), dtype=np.int64)
    order = np.lexsort((np.arange(len(frame)), times, user_codes))  # by user, then time, then file order
    bounds = np.flatnonzero(np.diff(user_codes[order])) + 1
    sequences = [s.astype(np.int64) for s in np.split(item_codes[order], bounds)]
    stamps = np.split(times[order], bounds) if has_time else None
    result = Interactions(np.asarray(user_ids, dtype=object), item_ids, sequences, stamps, report)
    report.update(users=result.n_users, items=result.n_items, interactions=result.n_interactions)
    return result


def load_interactions(path: str | Path | None, fmt: str = "auto", item_universe: list[str] | None = None,
                      min_user_interactions: int = 3, short_users: str = "error") -> Interactions:
    return build_interactions(load_frame(path, fmt), item_universe, min_user_interactions, short_users)


# ---- splits --------------------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Users to evaluate, each with one target item and the history a model sees (and the ranking masks)."""

    users: np.ndarray
    targets: np.ndarray
    histories: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Split:
    kind: str
    n_users: int
    n_items: int
    train: list[np.ndarray]  # per user (all users, possibly empty): training items in time order
    valid: EvalSet
    test: EvalSet
    cold_items: np.ndarray | None = None  # cold-start: the held-out item indexes (valid and test)

    @property
    def n_train(self) -> int:
        return int(sum(len(s) for s in self.train))

    def summary(self) -> dict:
        return {"split": self.kind, "users": self.n_users, "items": self.n_items, "train_interactions": self.n_train,
                "valid_users": len(self.valid), "test_users": len(self.test)}


def _eval_set(rows: list[tuple[int, int, np.ndarray]]) -> EvalSet:
    users = np.array([r[0] for r in rows], dtype=np.int64)
    targets = np.array([r[1] for r in rows], dtype=np.int64)
    return EvalSet(users, targets, [r[2] for r in rows])


def leave_one_out(data: Interactions) -> Split:
    short = [i for i, s in enumerate(data.sequences) if len(s) < 3]
    if short:
        raise RecommenderError(f"{len(short)} users have fewer than 3 interactions (e.g. user "
                               f"{data.user_ids[short[0]]!r}), so leave-one-out cannot give them a training, "
                               "validation and test item")
    train = [s[:-2] for s in data.sequences]
    valid = _eval_set([(u, int(s[-2]), s[:-2]) for u, s in enumerate(data.sequences)])
    test = _eval_set([(u, int(s[-1]), s[:-1]) for u, s in enumerate(data.sequences)])
    return Split("leave-one-out", data.n_users, data.n_items, train, valid, test)


def temporal(data: Interactions, valid_at: float = 0.8, test_at: float = 0.9) -> Split:
    if data.timestamps is None:
        raise RecommenderError("a temporal split needs timestamps, and this interaction format has none")
    all_times = np.concatenate(data.timestamps)
    cut_valid, cut_test = np.quantile(all_times, [valid_at, test_at])
    train, valid_rows, test_rows = [], [], []
    for u, (seq, ts) in enumerate(zip(data.sequences, data.timestamps, strict=True)):
        before = ts < cut_valid
        train.append(seq[before])
        for rows, start, end in ((valid_rows, cut_valid, cut_test), (test_rows, cut_test, np.inf)):
            inside = np.flatnonzero((ts >= start) & (ts < end))
            if len(inside) and inside[0] > 0:
                rows.append((u, int(seq[inside[0]]), seq[:inside[0]]))
    if not valid_rows or not test_rows:
        raise RecommenderError("the temporal cut leaves no validation or no test users; move train.data.valid_at "
                               "or train.data.test_at")
    return Split("temporal", data.n_users, data.n_items, train, _eval_set(valid_rows), _eval_set(test_rows))


def cold_start(data: Interactions, share: float = 0.1, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    seen = np.unique(np.concatenate(data.sequences))
    n_cold = max(2, int(round(share * len(seen))))
    cold = rng.permutation(seen)[:n_cold]
    cold_valid, cold_test = np.zeros(data.n_items, bool), np.zeros(data.n_items, bool)
    cold_valid[cold[: n_cold // 2]] = True
    cold_test[cold[n_cold // 2:]] = True
    held = cold_valid | cold_test
    train, valid_rows, test_rows = [], [], []
    for u, seq in enumerate(data.sequences):
        train.append(seq[~held[seq]])
        first = np.flatnonzero(held[seq])
        if len(first) and first[0] > 0:
            rows = valid_rows if cold_valid[seq[first[0]]] else test_rows
            rows.append((u, int(seq[first[0]]), seq[:first[0]]))
    if not valid_rows or not test_rows:
        raise RecommenderError("the cold-start split finds no user whose next item is held out; raise "
                               "train.data.cold_items")
    return Split("cold-start", data.n_users, data.n_items, train, _eval_set(valid_rows), _eval_set(test_rows),
                 cold_items=np.sort(cold))


def make_split(data: Interactions, kind: str = "leave-one-out", valid_at: float = 0.8, test_at: float = 0.9,
               cold_items: float = 0.1, seed: int = 0) -> Split:
    if kind == "leave-one-out":
        return leave_one_out(data)
    if kind == "temporal":
        return temporal(data, valid_at, test_at)
    if kind == "cold-start":
        return cold_start(data, cold_items, seed)
    raise RecommenderError(f"unknown split {kind!r}")
