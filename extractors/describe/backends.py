"""Describe backends behind one interface: requests (prompt + decoded media) in, texts + token counts out.

`TransformersBackend` runs anywhere (CPU or GPU); `VllmBackend` needs vLLM and a GPU. Both render the
prompt with the checkpoint's own chat template through its Hugging Face processor, so the text a model
sees does not depend on the backend. A request carries frames, sound or both: vision models (Qwen2/2.5/3-VL)
take frames, Qwen2-Audio takes sound, and Qwen2.5-Omni takes a video's frames with its sound interleaved.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from extractors.describe.prompts import chat_messages
from pipeline.config import AudioDescribeConfig, DescribeConfig, DescribeSettings

log = logging.getLogger(__name__)


@dataclass
class DescribeRequest:
    media_type: str  # "video" | "image" | "audio": the prompt's media part
    prompt: str
    frames: np.ndarray | None  # (T, H, W, 3) uint8; an image is T=1; None for sound alone
    fps: float = 0.0
    frame_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    total_frames: int = 1
    audio: np.ndarray | None = None  # (N,) float32 mono; with a video, its soundtrack (omni models)
    sample_rate: int = 16000


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    generated_tokens: int


class PromptTooLong(ValueError):
    """A prompt (text plus visual tokens) longer than the configured limit."""


def model_family(cfg: DescribeSettings) -> str:
    """How video frames go to vLLM: arrays (Qwen2/2.5-VL and Qwen2.5-Omni) or (frames, metadata) (Qwen3-VL)."""
    if not isinstance(cfg, DescribeConfig):
        return "qwen2_vl"
    if cfg.model_family != "auto":
        return cfg.model_family
    return "qwen3_vl" if "qwen3" in cfg.model.lower() else "qwen2_vl"


def make_backend(cfg: DescribeSettings):
    return VllmBackend(cfg) if cfg.backend == "vllm" else TransformersBackend(cfg)


def render_prompts(processor, requests: list[DescribeRequest]) -> list[str]:
    return [processor.apply_chat_template(chat_messages(r.media_type, r.prompt), add_generation_prompt=True,
                                          tokenize=False) for r in requests]


def video_metadata(request: DescribeRequest) -> dict:
    """What Qwen3-VL needs to place sampled frames in time (vLLM and HF take the same keys)."""
    fps = request.fps or 1.0
    return {"fps": fps, "duration": request.total_frames / fps, "total_num_frames": int(request.total_frames),
            "frames_indices": [int(i) for i in request.frame_indices], "video_backend": "seerec",
            "do_sample_frames": False}


# ---- transformers --------------------------------------------------------------------------------------
def load_generator(model: str, dtype: torch.dtype):
    """The text-writing model of a checkpoint, as `AutoModelForMultimodalLM` (vision and audio LLMs) loads it.

    A published Qwen2.5-Omni checkpoint also holds a speech generator (talker); only its thinker writes
    text, so only the thinker is loaded (its weights are the checkpoint's `thinker.*`).
    """
    from transformers import AutoConfig, AutoModelForMultimodalLM, Qwen2_5OmniThinkerForConditionalGeneration

    config = AutoConfig.from_pretrained(model)
    if config.model_type == "qwen2_5_omni":
        return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(model, config=config.thinker_config,
                                                                          dtype=dtype)
    return AutoModelForMultimodalLM.from_pretrained(model, dtype=dtype)


class TransformersBackend:
    """`AutoModelForMultimodalLM` (or Omni's thinker) + `AutoProcessor`, batched generation with left padding."""

    def __init__(self, cfg: DescribeSettings):
        from transformers import AutoProcessor

        from extractors.embed import resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device, cfg.num_cpus)
        dtype = {"auto": torch.bfloat16 if self.device.startswith("cuda") else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        self.processor.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        self.model = load_generator(cfg.model, dtype).to(self.device).eval()
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_prompt_tokens = cfg.max_prompt_tokens or (
            text_config.max_position_embeddings - cfg.generation.max_new_tokens)
        self.pad_id = self.processor.tokenizer.pad_token_id

    @torch.inference_mode()
    def generate(self, requests: list[DescribeRequest]) -> list[Generation]:
        inputs, media_kwargs = self._inputs(requests)
        lengths = inputs["attention_mask"].sum(1)
        if int(lengths.max()) > self.max_prompt_tokens:
            raise PromptTooLong(f"the prompt has {int(lengths.max())} tokens with its media, over the limit of "
                                f"{self.max_prompt_tokens} (describe.max_prompt_tokens)")
        gen = self.cfg.generation
        if gen.do_sample:
            torch.manual_seed(gen.seed)
        sampling = {"temperature": gen.temperature, "top_p": gen.top_p} if gen.do_sample else {}
        output = self.model.generate(**inputs.to(self.device), max_new_tokens=gen.max_new_tokens,
                                     do_sample=gen.do_sample, **sampling, **media_kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:].cpu()
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        counts = (new_tokens != self.pad_id).sum(1).tolist()
        return [Generation(t.strip(), int(p), int(c)) for t, p, c in zip(texts, lengths.tolist(), counts, strict=True)]

    def _inputs(self, requests: list[DescribeRequest]) -> tuple[dict, dict]:
        """The processor's tensors, and what `generate` must be told about them (a video's sound inside it)."""
        from PIL import Image

        video_requests = [r for r in requests if r.media_type == "video"]
        images = [Image.fromarray(r.frames[0]) for r in requests if r.media_type == "image"]
        extra, media_kwargs = {}, {}
        if video_requests and model_family(self.cfg) == "qwen3_vl":
            extra["video_metadata"] = [video_metadata(r) for r in video_requests]
        sounds = [r for r in requests if r.audio is not None]
        if sounds:
            extra.update(audio=[r.audio for r in sounds], sampling_rate=sounds[0].sample_rate)
        if any(r.audio is not None for r in video_requests):
            # Omni: each video's sound is interleaved with its frames in time, in the video's own placeholder;
            # per sound, the index of its video (None for sound alone).
            video_index = {id(r): i for i, r in enumerate(video_requests)}
            extra.update(load_audio_from_video=True, audio_from_video_indices=[video_index.get(id(r)) for r in sounds])
            media_kwargs["use_audio_in_video"] = True
        inputs = self.processor(text=render_prompts(self.processor, requests),
                                videos=[r.frames for r in video_requests] or None, images=images or None,
                                padding=True, return_tensors="pt", **extra)
        return inputs, media_kwargs


# ---- vLLM -----------------------------------------------------------------------------------------------
def vllm_inputs(prompt_text: str, request: DescribeRequest, family: str) -> dict:
    """One vLLM prompt dict: text with the chat template's placeholder, media in `multi_modal_data`.

    Qwen2/2.5-VL (and Qwen2.5-Omni) take a video as a (T, H, W, 3) uint8 array; Qwen3-VL takes
    (frames, metadata) so that it can time-stamp the frames we sampled. Images go in as PIL images, sound as
    (samples, sample_rate). A video with its sound (Omni) also asks the processor to interleave the two.
    """
    data: dict = {}
    if request.media_type == "video":
        frames = np.ascontiguousarray(request.frames, dtype=np.uint8)
        data["video"] = (frames, video_metadata(request)) if family == "qwen3_vl" else frames
    elif request.media_type == "image":
        from PIL import Image

        data["image"] = Image.fromarray(request.frames[0])
    if request.audio is not None:
        data["audio"] = (np.ascontiguousarray(request.audio, dtype=np.float32), request.sample_rate)
    payload = {"prompt": prompt_text, "multi_modal_data": data}
    if request.media_type == "video" and request.audio is not None:
        payload["mm_processor_kwargs"] = {"use_audio_in_video": True}
    return payload


def limit_mm_per_prompt(cfg: DescribeSettings) -> dict[str, int]:
    """Media items vLLM must make room for in one prompt: only the modalities the stage sends."""
    v = cfg.vllm
    if isinstance(cfg, AudioDescribeConfig):
        return {"audio": v.max_audios_per_prompt, **({"video": v.max_videos_per_prompt} if cfg.modality == "omni"
                                                      else {})}
    return {"video": v.max_videos_per_prompt, "image": v.max_images_per_prompt}


def vllm_engine_args(cfg: DescribeSettings) -> dict:
    v = cfg.vllm
    return {"model": cfg.model, "tensor_parallel_size": v.tensor_parallel_size, "max_model_len": v.max_model_len,
            "gpu_memory_utilization": v.gpu_memory_utilization, "dtype": v.dtype, "seed": cfg.generation.seed,
            "limit_mm_per_prompt": limit_mm_per_prompt(cfg)}


def vllm_sampling_args(cfg: DescribeSettings) -> dict:
    gen = cfg.generation
    if not gen.do_sample:
        return {"max_tokens": gen.max_new_tokens, "temperature": 0.0}
    return {"max_tokens": gen.max_new_tokens, "temperature": gen.temperature, "top_p": gen.top_p, "seed": gen.seed}


class VllmBackend:
    """An actor-held `vllm.LLM`; Ray Data gives each actor its GPUs (`describe.num_gpus`)."""

    def __init__(self, cfg: DescribeSettings):
        try:
            import vllm
        except ImportError:
            raise RuntimeError("describe.backend=vllm needs vLLM: install 'seerec[vllm]' on a GPU machine") from None
        from transformers import AutoProcessor

        self.cfg, self.family = cfg, model_family(cfg)
        self.processor = AutoProcessor.from_pretrained(cfg.model)
        self.llm = vllm.LLM(**vllm_engine_args(cfg))
        self.sampling = vllm.SamplingParams(**vllm_sampling_args(cfg))

    def generate(self, requests: list[DescribeRequest]) -> list[Generation]:
        prompts = [vllm_inputs(text, r, self.family)
                   for text, r in zip(render_prompts(self.processor, requests), requests, strict=True)]
        outputs = self.llm.generate(prompts, self.sampling, use_tqdm=False)
        return [Generation(o.outputs[0].text.strip(), len(o.prompt_token_ids), len(o.outputs[0].token_ids))
                for o in outputs]
