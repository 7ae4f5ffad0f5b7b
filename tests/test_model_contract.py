"""The model contract: a model declared here, in one class plus its config, trains through the normal loop
into a normal run folder, and the registry, the config loader and the model table all know it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import ConfigError, Section, validate_config
from recommenders.base import Recommender, sequence_batches
from recommenders.data import RecommenderError
from recommenders.evaluate import pad_histories
from recommenders.experiment import Entry, prepare_data, run_experiment, run_train
from recommenders.registry import MODELS, model_choices, model_class, model_table, register, unregister
from recommenders.runs import load_run
from tests.test_recommenders import run_config


class NextItemConfig(Section):
    dim: int = Field(16, ge=1)


class NextItem(Recommender):
    """Scores the next item from the last one alone: a learned item-to-item table."""

    def __init__(self, n_users: int, n_items: int, config: NextItemConfig, features=None):
        super().__init__(n_users, n_items, config)
        self.inputs, self.outputs = nn.Embedding(n_items, config.dim), nn.Embedding(n_items, config.dim)
        self.scored_users = 0
        self.loads = 0

    def batches(self, train, batch_size, rng):
        return sequence_batches(train, 50, batch_size, rng, self.device)

    def loss(self, batch: dict) -> torch.Tensor:
        keep = batch["targets"] >= 0  # every (item, next item) pair of the batch's sequences
        return F.cross_entropy(self.inputs(batch["inputs"][keep]) @ self.outputs.weight.T, batch["targets"][keep])

    def score(self, users: torch.Tensor, histories: Sequence[np.ndarray]) -> torch.Tensor:
        self.scored_users += len(histories)
        last = pad_histories(histories, 1).to(self.device)[:, -1].clamp(min=0)
        return self.inputs(last) @ self.outputs.weight.T

    def on_weights_loaded(self) -> None:
        self.loads += 1

    def start_evaluation(self) -> None:
        self.scored_users = 0

    def evaluation_report(self) -> dict:
        return {"scored_users": self.scored_users}


@pytest.fixture(autouse=True)
def next_item_registered():
    """A model file would decorate the class with @register(...); here it is registered for this module's tests
    only, so that the configs other test modules write name no model their subprocesses and workers lack."""
    register("next_item", NextItemConfig)(NextItem)
    yield
    unregister("next_item")


def test_a_model_declared_in_one_class_trains_into_a_run_folder(tmp_path):
    cfg = run_config(tmp_path, model="next_item", name="ni", epochs=4, lr=5e-2, batch_size=32,
                     next_item={"dim": 8})
    result = run_train(cfg)
    run_dir = tmp_path / "runs" / "ni"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "next_item" and metrics["best_epoch"] > 0
    assert metrics["test"]["ndcg@10"] > 0.3  # each topic walks a fixed order: the last item gives the next
    # The hook's report covers the test ranking alone, and the best epoch's weights were loaded back.
    assert metrics["evaluation_report"] == {"scored_users": metrics["split"]["test_users"]}
    assert result.model.loads == 1
    about = json.loads((run_dir / "model.json").read_text())
    assert about["model"] == "next_item" and about["config"] == {"dim": 8}
    model, _ = load_run(run_dir)
    assert isinstance(model, NextItem) and model.config == NextItemConfig(dim=8)
    histories = prepare_data(cfg).split.test.histories[:5]
    assert torch.equal(model.score(torch.arange(5), histories), result.model.cpu().score(torch.arange(5), histories))


def test_registry_config_and_table_know_a_registered_model(tmp_path):
    assert model_class("next_item") is NextItem
    assert "next_item" in model_choices().split("|")
    assert "| `next_item` | ID-only | - | yes | Scores the next item from the last one alone" in model_table()
    assert validate_config({"train": {"model": "next_item"}}).train.section() == NextItemConfig()
    with pytest.raises(ConfigError, match=r"key 'train.next_item.dims' is not a known setting \(did you mean 'dim'"):
        validate_config({"train": {"next_item": {"dims": 4}}})
    with pytest.raises(ConfigError, match="'nope' is not a registered model; the models are: .*next_item"):
        validate_config({"train": {"model": "nope"}})
    with pytest.raises(RecommenderError, match="'nope' is not a registered model"):
        run_experiment(run_config(tmp_path), [Entry("nope")], "bad")


def test_the_contract_is_checked_when_a_model_registers():
    class Untrained(Recommender):
        def score(self, users, histories):
            return torch.zeros(len(histories), self.n_items)

    with pytest.raises(TypeError, match="trainable but does not define batches"):
        register("untrained", NextItemConfig)(Untrained)
    with pytest.raises(TypeError, match="'sasrec' is taken"):
        register("sasrec", NextItemConfig)(NextItem)


def test_an_experiment_runs_entries_with_overrides_into_run_folders(tmp_path):
    cfg = run_config(tmp_path, epochs=2, batch_size=32)
    entries = [Entry("popularity"), Entry("next_item", overrides=("train.next_item.dim=4",)),
               Entry("next_item", overrides=("train.next_item.dim=8", "train.lr=0.05"))]
    table = run_experiment(cfg, entries, "grid")
    assert list(table["run"]) == ["grid/popularity", "grid/next_item", "grid/next_item-2"]
    assert list(table["overrides"]) == ["-", "train.next_item.dim=4", "train.next_item.dim=8 train.lr=0.05"]
    sizes = [json.loads((tmp_path / "runs" / run / "model.json").read_text())["config"] for run in table["run"][1:]]
    assert sizes == [{"dim": 4}, {"dim": 8}]
    assert table["test_ndcg@10"].iloc[2] > table["test_ndcg@10"].iloc[0]  # the trained model beats popularity


@pytest.mark.parametrize("page", ["README.md", "docs/recommenders.md"])
def test_the_documented_model_table_is_the_registry_s(page):
    text = (Path(__file__).parents[1] / page).read_text()
    start = text.index("\n", text.index("<!-- models:begin")) + 1
    documented = text[start:text.index("<!-- models:end -->")].strip()
    seerec = [name for name in model_choices().split("|") if MODELS[name].__module__.startswith("recommenders.")]
    assert documented == model_table(seerec)  # this module's model is left out: it is not one of seerec's


def test_pipeline_alone_validates_model_sections_through_the_entry_points():
    """pipeline/ imports no recommender; the `seerec.models` entry points make `train.sasrec` known anyway."""
    import subprocess
    import sys

    code = ("import sys\nfrom pipeline.config import ConfigError, validate_config\n"
            "assert 'recommenders' not in sys.modules\n"
            "assert validate_config({'train': {'sasrec': {'hidden': 32}}}).train.sasrec.hidden == 32\n"
            "try:\n    validate_config({'train': {'sasrec': {'hiddn': 32}}})\n"
            "except ConfigError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config key 'train.sasrec.hiddn' is not a known setting (did you mean 'hidden'?)"
