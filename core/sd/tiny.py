"""Tiny random-weight Stable Diffusion pipelines, written offline, for tests and smoke runs.

The folder has the same layout and classes as a real SD 1.x diffusers folder (``model_index.json``,
``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), only with a few thousand
weights and a byte-level tokenizer with no merges, so every code path of the real model runs in
milliseconds. :func:`to_original_layout` writes the same weights as an original CompVis-layout single
file, to exercise diffusers' single-file conversion.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# SD 1.x's noise schedule; "leading" spacing with steps_offset 1, as its scheduler config has.
SD1_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}
TOKENS = 16  # context length of the tiny text encoder


def tiny_tokenizer(max_length: int = TOKENS):
    """A CLIP tokenizer over single bytes (and bytes ending a word): no download, no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab[c] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_components(seed: int = 0, *, pixel_space: bool = False, inpainting: bool = False):
    """(unet, vae or None, text encoder, tokenizer): random weights from ``seed``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    vae = None
    if not pixel_space:
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=16,
        )
    channels = 3 if pixel_space else 4
    unet = UNet2DConditionModel(
        sample_size=16 if pixel_space else 8,
        in_channels=2 * channels + 1 if inpainting else channels,
        out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    return unet.eval(), (vae.eval() if vae is not None else None), text.eval(), tok


def write_tiny_pipeline(folder: str | Path, seed: int = 0, **kw) -> Path:
    """Write a tiny random diffusers folder (see :func:`tiny_components` for the options)."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    unet, vae, text, tok = tiny_components(seed, **kw)
    return write_pipeline_folder(folder, unet, vae, text, tok, DDIMScheduler(**SD1_SCHEDULE))


def write_pipeline_folder(
    folder: Path, unet, vae, text, tok, scheduler, *, extra: dict | None = None
) -> Path:
    """Save components as a diffusers pipeline folder (safetensors weights)."""
    import diffusers

    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    if vae is not None:
        vae.save_pretrained(folder / "vae", safe_serialization=True)
    text.save_pretrained(folder / "text_encoder", safe_serialization=True)
    tok.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"] if vae is not None else [None, None],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        **(extra or {}),
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


# --- diffusers -> original (CompVis) key layout, the inverse of diffusers' single-file conversion ----


def _unet_key_map(cfg) -> dict[str, str]:
    """Prefix renames diffusers -> LDM for a UNet2DConditionModel config (any depth/layers)."""
    lpb, n = cfg.layers_per_block, len(cfg.block_out_channels)
    m = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for b in range(n):
        for j in range(lpb):
            i = 1 + b * (lpb + 1) + j
            m[f"down_blocks.{b}.resnets.{j}"] = f"input_blocks.{i}.0"
            m[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{i}.1"
        m[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op"
        has_attn = cfg.up_block_types[b].startswith("CrossAttn")
        for j in range(lpb + 1):
            i = b * (lpb + 1) + j
            m[f"up_blocks.{b}.resnets.{j}"] = f"output_blocks.{i}.0"
            m[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{i}.1"
        last = b * (lpb + 1) + lpb
        m[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{last}.{2 if has_attn else 1}.conv"
    return m


UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, prefixes: dict[str, str], inner: dict[str, str]) -> str:
    for src in sorted(prefixes, key=len, reverse=True):
        if key.startswith(src + "."):
            rest = key[len(src) + 1 :]
            for a, b in inner.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a) :]
                    break
            return f"{prefixes[src]}.{rest}"
    return key


def _vae_key_map(cfg) -> dict[str, str]:
    n = len(cfg.block_out_channels)
    m = {}
    for part in ("encoder", "decoder"):
        m[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        m[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        m[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
        m[f"{part}.conv_norm_out"] = f"{part}.norm_out"
    for b in range(n):
        m[f"encoder.down_blocks.{b}.downsamplers.0.conv"] = f"encoder.down.{b}.downsample.conv"
        m[f"decoder.up_blocks.{b}.upsamplers.0.conv"] = f"decoder.up.{n - 1 - b}.upsample.conv"
        for j in range(cfg.layers_per_block + 1):
            m[f"encoder.down_blocks.{b}.resnets.{j}"] = f"encoder.down.{b}.block.{j}"
            m[f"decoder.up_blocks.{b}.resnets.{j}"] = f"decoder.up.{n - 1 - b}.block.{j}"
    return m


def to_original_layout(unet, vae, text) -> dict[str, torch.Tensor]:
    """The state dict an SD 1.x ``.ckpt``/``.safetensors`` holds for these (diffusers) components."""
    out = {}
    umap = _unet_key_map(unet.config)
    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + _rename(k, umap, UNET_RESNET)] = v
    vmap = _vae_key_map(vae.config)
    for k, v in vae.state_dict().items():
        new = _rename(k, vmap, VAE_ATTN if ".mid_block.attentions." in k else VAE_RESNET)
        if ".mid.attn_1." in new and new.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the original VAE's attention projections are 1x1 convolutions
        out["first_stage_model." + new] = v
    for k, v in text.state_dict().items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return {k: v.contiguous() for k, v in out.items()}
