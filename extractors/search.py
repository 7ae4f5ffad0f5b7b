"""Query vectors for store search, made by the very encoder that filled the searched column.

The encoder is read back from the column's provenance (`<column>_model`), so a text query against
`text_vec` uses the sentence-transformers model that built it, and a text or image query against
`clip_vec` uses the CLIP towers that built that one.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from extractors.embed import ClipEmbedder, parse_clip_model_id, text_model_path
from pipeline.config import ImageEmbedConfig, MediaConfig
from pipeline.store import ItemStore, StoreError


def column_model(store: ItemStore, column: str) -> str:
    models = store.model_ids(column)
    if not models:
        raise StoreError(f"column {column!r} has no vectors yet; run `seerec embed` first")
    if len(models) > 1:
        raise StoreError(f"column {column!r} mixes vectors from {', '.join(models)}; re-embed with --force")
    return models[0]


def text_query_vector(store: ItemStore, column: str, text: str) -> np.ndarray:
    model_id = column_model(store, column)
    if model_id.startswith("sentence-transformers:"):
        encoder = _sentence_encoder(model_id.removeprefix("sentence-transformers:"))
        return encoder.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0].astype(np.float32)
    if model_id.startswith("open_clip:"):
        import open_clip

        name, pretrained = parse_clip_model_id(model_id)
        tokens = open_clip.get_tokenizer(name)([text])
        with torch.inference_mode():
            vector = _clip_embedder(name, pretrained).model.encode_text(tokens).float()
        return torch.nn.functional.normalize(vector, dim=-1)[0].numpy()
    raise StoreError(f"cannot embed a text query for column {column!r} (built by {model_id})")


def image_query_vector(store: ItemStore, column: str, uri: str, media: MediaConfig) -> np.ndarray:
    from pipeline.media import decode_item

    model_id = column_model(store, column)
    if not model_id.startswith("open_clip:"):
        raise StoreError(f"column {column!r} was built by {model_id}, not an image encoder")
    media_type = "video" if uri.lower().endswith((".mp4", ".mov", ".mkv", ".webm", ".avi")) else "image"
    decoded = decode_item(uri, media_type, media)
    return _clip_embedder(*parse_clip_model_id(model_id)).embed_items([decoded.frames])[0]


@cache
def _sentence_encoder(name: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(text_model_path(name), device="cpu")


@cache
def _clip_embedder(name: str, pretrained: str | None) -> ClipEmbedder:
    return ClipEmbedder(ImageEmbedConfig(model=name, pretrained=pretrained, device="cpu"))
