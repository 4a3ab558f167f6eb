"""The bundled tiny CLIP's text tower as a transformers ``CLIPTextModel`` + ``CLIPTokenizer``.

open_clip's text transformer and OpenAI CLIP's (which transformers' ``CLIPTextModel`` ports) are the
same network: token + position embeddings, pre-norm blocks with causal self-attention and a GELU MLP,
a final LayerNorm. Converting the weights (the fused q/k/v projection split in three) and building the
BPE tokenizer from open_clip's own vocabulary file lets the bundled diffusion model be an ordinary
diffusers folder whose cross-attention context is the tiny CLIP's per-token hidden states, exactly as
SD 1.x's is OpenAI CLIP's. :func:`open_clip_hidden_states` is the reference the port is tested against.
"""

from __future__ import annotations

import gzip

import torch

# open_clip pads with token 0 ("!"), as SD 2.x's tokenizer does; keeping it makes the token ids equal.
PAD_TOKEN = "!"


def open_clip_tokenizer_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of open_clip's ``SimpleTokenizer``, ids identical, special tokens renamed to
    transformers' spelling."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice SimpleTokenizer takes
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, [tuple(m.split()) for m in merges]


def hf_tokenizer(context_length: int):
    from transformers import CLIPTokenizer

    vocab, merges = open_clip_tokenizer_files()
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=PAD_TOKEN, model_max_length=context_length)


def hf_text_model(clip_model) -> torch.nn.Module:
    """A ``CLIPTextModel`` with the weights of an open_clip ``CLIP``'s text tower (``clip.model``)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    m = clip_model
    width = m.token_embedding.weight.shape[1]
    blocks = m.transformer.resblocks
    cfg = CLIPTextConfig(
        vocab_size=m.token_embedding.weight.shape[0],
        hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features,
        num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads,
        max_position_embeddings=m.positional_embedding.shape[0],
        hidden_act="gelu",  # open_clip's default nn.GELU (exact); quick_gelu models are refused below
        layer_norm_eps=m.ln_final.eps,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=0,
    )
    if not isinstance(blocks[0].mlp.gelu, torch.nn.GELU):
        raise ValueError("only open_clip text towers with nn.GELU convert (not QuickGELU)")
    model = CLIPTextModel(cfg)
    missing, unexpected = model.load_state_dict(_convert(m), strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise ValueError(f"text tower conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _convert(m) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.token_embedding.weight": m.token_embedding.weight,
        "embeddings.position_embedding.weight": m.positional_embedding,
        "final_layer_norm.weight": m.ln_final.weight,
        "final_layer_norm.bias": m.ln_final.bias,
    }
    for i, b in enumerate(m.transformer.resblocks):
        p = f"encoder.layers.{i}."
        for name, t in zip(("q", "k", "v"), b.attn.in_proj_weight.chunk(3), strict=True):
            out[p + f"self_attn.{name}_proj.weight"] = t
        for name, t in zip(("q", "k", "v"), b.attn.in_proj_bias.chunk(3), strict=True):
            out[p + f"self_attn.{name}_proj.bias"] = t
        pairs = {
            "self_attn.out_proj": b.attn.out_proj,
            "layer_norm1": b.ln_1,
            "layer_norm2": b.ln_2,
            "mlp.fc1": b.mlp.c_fc,
            "mlp.fc2": b.mlp.c_proj,
        }
        for name, mod in pairs.items():
            out[p + name + ".weight"], out[p + name + ".bias"] = mod.weight, mod.bias
    return {k: v.detach().clone().float() for k, v in out.items()}


@torch.no_grad()
def open_clip_hidden_states(clip_model, tokens: torch.Tensor) -> torch.Tensor:
    """The reference: open_clip's ``encode_text`` up to (and including) ``ln_final``, per token."""
    m = clip_model
    x = m.token_embedding(tokens) + m.positional_embedding
    x = m.transformer(x, attn_mask=m.attn_mask)
    return m.ln_final(x)  # [B, L, width]
