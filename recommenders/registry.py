"""The model registry: `@register(name, Config)` on a model class is all it takes to add a model.

Registering a model
- puts the class in `MODELS` under `name` (what `train.model`, `compare.models` and run folders name),
- gives it its config class (`train.<name>` in YAML is validated against it), and
- hands that config class to `pipeline.config`'s section registry, so that configs validate the section
  without `pipeline` importing any recommender (see `pipeline.config.model_sections`).

`MODELS` holds the models of every module imported so far; `model_class` imports `recommenders.models` (every
model of seerec) first, so a lookup never depends on what happened to be imported. The CLI's list of
choices and the docs' model table are made from the registry here, never written by hand.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pipeline.config import Section, register_model_section, unregister_model_section
from recommenders.data import RecommenderError

if TYPE_CHECKING:
    from recommenders.base import Recommender

MODELS: dict[str, type[Recommender]] = {}

KINDS = {"ids": "ID-only", "features": "content", "semantic_ids": "generative"}
NEEDS = {"ids": "-", "features": "store vector columns (`train.features`)",
         "semantic_ids": "semantic IDs (`seerec quantize`)"}


def register(name: str, config: type[Section]):
    """Class decorator: register a `Recommender` subclass as model `name`, configured by `config`."""

    def decorate(cls: type[Recommender]) -> type[Recommender]:
        if cls.trainable and (cls.batches is _base().batches or cls.loss is _base().loss):
            raise TypeError(f"model {name} is trainable but does not define batches() and loss()")
        if cls.item_inputs not in KINDS:
            raise TypeError(f"model {name}: item_inputs must be one of {', '.join(KINDS)}")
        if cls.item_inputs == "semantic_ids" and "semantic_id_column" not in config.model_fields:
            raise TypeError(f"model {name} reads semantic IDs, so its config needs a semantic_id_column setting")
        known = MODELS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"model name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        cls.name, cls.config_class = name, config
        MODELS[name] = cls
        register_model_section(name, config)
        return cls

    return decorate


def unregister(name: str) -> None:
    """Forget model `name` (a model registered for a while, e.g. by a test or a notebook)."""
    MODELS.pop(name, None)
    unregister_model_section(name)


def _base() -> type[Recommender]:
    from recommenders.base import Recommender

    return Recommender


def _all_models() -> dict[str, type[Recommender]]:
    """Every registered model, ID-only ones first, then content, then generative, by name within a kind."""
    import recommenders.models  # noqa: F401  (registers every model of seerec)

    order = list(KINDS)
    return dict(sorted(MODELS.items(), key=lambda item: (order.index(item[1].item_inputs), item[0])))


def model_class(name: str) -> type[Recommender]:
    models = _all_models()
    if name not in models:
        raise RecommenderError(f"{name!r} is not a registered model; the models are: {', '.join(models)}")
    return models[name]


def model_choices() -> str:
    """`popularity|bpr|...`: the registered names, for a command's help text."""
    return "|".join(_all_models())


def summary(cls: type[Recommender]) -> str:
    """The first line of the model class's own docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    return lines[0] if lines else ""


def model_table(names: Iterable[str] | None = None) -> str:
    """A Markdown table of the registered models (or of `names`): name, kind, the item inputs it needs,
    whether it trains, and the first line of its docstring. docs/recommenders.md holds seerec's."""
    models = _all_models()
    rows = ["| model | kind | item inputs | trained | what it is |", "|---|---|---|---|---|"]
    for name in models if names is None else names:
        cls = models[name]
        rows.append(f"| `{name}` | {KINDS[cls.item_inputs]} | {NEEDS[cls.item_inputs]} | "
                    f"{'yes' if cls.trainable else 'no'} | {summary(cls)} |")
    return "\n".join(rows)
