"""Query vectors for store search, made by the encoder the config names for the searched column.

The encoder comes from the config (`embed.text` for its column, `embed.image` for its column), never from
the store: whoever can write a store must not choose which checkpoint the searcher loads. The store's record
of the column's model (`<column>_model`) is only checked against the config's, so a query is never embedded
by another model than the one that built the column.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch

from extractors.embed import ClipEmbedder, TextEmbedder, clip_model_id, recorded_text_id, text_model_id
from pipeline.config import ImageEmbedConfig, SeerecConfig, TextEmbedConfig
from pipeline.models import same_model
from pipeline.store import ItemStore, StoreError


def column_encoder(cfg: SeerecConfig, column: str) -> TextEmbedConfig | ImageEmbedConfig:
    """The config's encoder section of a vector column."""
    if column == cfg.embed.text.column:
        return cfg.embed.text
    if column == cfg.embed.image.column:
        return cfg.embed.image
    raise StoreError(f"the config embeds no column {column!r} (embed.text.column is {cfg.embed.text.column!r}, "
                     f"embed.image.column is {cfg.embed.image.column!r}); search with the config that built it")


def check_column_model(store: ItemStore, column: str, encoder: TextEmbedConfig | ImageEmbedConfig) -> None:
    """Refuse a column whose vectors were made by another model than the config's encoder."""
    expected = text_model_id(encoder) if isinstance(encoder, TextEmbedConfig) else clip_model_id(encoder)
    models = store.model_ids(column)
    if not models:
        raise StoreError(f"column {column!r} has no vectors yet; run `seerec embed` first")
    recorded_as = recorded_text_id if isinstance(encoder, TextEmbedConfig) else str
    if other := [m for m in models if not same_model(recorded_as(m), expected)]:
        raise StoreError(f"column {column!r} was embedded by {', '.join(other)}, but the config's encoder is "
                         f"{expected}; search with the config that embedded it, or re-embed with `seerec embed "
                         "--force`")


def text_query_vector(store: ItemStore, cfg: SeerecConfig, column: str, text: str) -> np.ndarray:
    return text_query_encoder(store, cfg, column)(text)


def text_query_encoder(store: ItemStore, cfg: SeerecConfig, column: str) -> Callable[[str], np.ndarray]:
    """Text -> query vector for `column`, its model checked against the store once (the check scans the
    column's model records, so a caller embedding many queries, e.g. the explorer, keeps the encoder)."""
    encoder = column_encoder(cfg, column)
    check_column_model(store, column, encoder)
    if isinstance(encoder, TextEmbedConfig):
        embedder = _text_embedder(encoder.model_dump_json())
        return lambda text: embedder.encode([text])[0]
    import open_clip

    clip = _clip_embedder(encoder.model_dump_json())
    tokenizer = open_clip.get_tokenizer(encoder.model)

    def encode(text: str) -> np.ndarray:
        with torch.inference_mode():
            vector = clip.model.encode_text(tokenizer([text])).float()
        return torch.nn.functional.normalize(vector, dim=-1)[0].numpy()

    return encode


def image_query_vector(store: ItemStore, cfg: SeerecConfig, column: str, uri: str) -> np.ndarray:
    from pipeline.media import decode_item

    encoder = column_encoder(cfg, column)
    if not isinstance(encoder, ImageEmbedConfig):
        raise StoreError(f"column {column!r} holds text vectors; search it with --text")
    check_column_model(store, column, encoder)
    media_type = "video" if uri.lower().endswith((".mp4", ".mov", ".mkv", ".webm", ".avi")) else "image"
    decoded = decode_item(uri, media_type, cfg.media)
    return _clip_embedder(encoder.model_dump_json()).embed_items([decoded.frames])[0]


# Keyed by the section's JSON, so one process loads each encoder once, however many queries it embeds.
@cache
def _text_embedder(section_json: str) -> TextEmbedder:
    return TextEmbedder(TextEmbedConfig.model_validate_json(section_json).model_copy(update={"device": "cpu"}))


@cache
def _clip_embedder(section_json: str) -> ClipEmbedder:
    return ClipEmbedder(ImageEmbedConfig.model_validate_json(section_json).model_copy(update={"device": "cpu"}))
