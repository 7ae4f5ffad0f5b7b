"""Tiny random-weight checkpoints of real architectures, built offline for the demo, `seerec make-test-model` and
the tests.

Nothing can be downloaded offline, so these stand in for published weights. They are saved in the same on-disk
layout as published checkpoints and loaded back through the same code path, so everything except the quality of
the weights is exercised for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def make_tiny_clip(out_dir: str | Path, seed: int = 0) -> str:
    """Write an open_clip `local-dir:` checkpoint (config JSON + safetensors) and return its model name."""
    import open_clip
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    config = {"model_cfg": TINY_CLIP_CONFIG,
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    return f"local-dir:{out.resolve()}"


# ---- a tiny Qwen2-VL -------------------------------------------------------------------------------------
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]

# Renders a conversation whose user turn mixes text, image and video parts; each visual part becomes
# one placeholder that the processor expands to the right number of patch tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_bpe(corpus: list[str], vocab_size: int, special_tokens: list[str], unk_token: str | None = None):
    """A byte-level BPE tokenizer trained on `corpus` (no tokenizer download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=unk_token))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def _train_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with Qwen's special tokens."""
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast(tokenizer_object=_byte_level_bpe(corpus, vocab_size, QWEN_SPECIAL_TOKENS),
                              eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None)


def make_tiny_qwen2_vl(out_dir: str | Path, seed: int = 0, vocab_size: int = 600) -> Path:
    """Write a random-weight Qwen2-VL checkpoint (config, safetensors, tokenizer, processor) to `out_dir`.

    The tokenizer is trained here on a little English so that generated token ids decode to text; the
    model's output is gibberish, but loading, prompting, batching and decoding all run for real.
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = [*QWEN_SPECIAL_TOKENS, "user assistant system video image describe the content mood audience",
              "a person dances in a bright kitchen while a cat watches", "funny parody of a cooking show",
              "the ocean waves at sunset with calm music", "children laugh at a cartoon dog", "0123456789 .,!?"]
    tokenizer = _train_tokenizer(corpus * 4, vocab_size)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    hidden = 64
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 4096, "rope_parameters": {
                         "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"],
                     # Wide random weights make greedy output depend on the input, not repeat one token.
                     "initializer_range": 0.5},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": hidden, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    # Small pixel budgets keep the vision tower cheap on a CPU (a 448-px frame becomes a few patches).
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels),
        video_processor=Qwen2VLVideoProcessor(size=pixels, cap_pixels_per_frame=True),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


# ---- a tiny CLAP -----------------------------------------------------------------------------------------
ROBERTA_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def make_tiny_clap(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a random-weight CLAP checkpoint (HTSAT audio tower, RoBERTa text tower, processor) to `out_dir`.

    Same layout as `laion/clap-htsat-unfused`, loaded back with `from_pretrained`; two small Swin stages
    instead of four keep it about 300 KB and quick on a CPU.
    """
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = ["a dog barks in the rain", "calm piano music", "people talk in a busy kitchen", "0123456789 .,!?"]
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=_byte_level_bpe(corpus * 4, 400, ROBERTA_SPECIAL_TOKENS, unk_token="<unk>"),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        cls_token="<s>", sep_token="</s>")
    config = ClapConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "projection_dim": 32, "max_position_embeddings": 80},
        audio_config={"depths": [1, 1], "num_attention_heads": [1, 2], "patch_embeds_hidden_size": 16,
                      "hidden_size": 32, "projection_dim": 32, "num_classes": 8},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(out)
    # The unfused checkpoints' preprocessing: 48 kHz, 10-second inputs, short clips repeated to fill them.
    features = ClapFeatureExtractor(sampling_rate=48000, max_length_s=10, truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    return out
