"""Tiny random-weight SAM and Grounding DINO for tests (this pack's and the nodes').

They are saved in the real formats (a SAM ``.pth`` state dict; a Hugging Face folder) so they
load through the same ``load_sam`` / ``load_grounding_dino`` as the released models."""
from __future__ import annotations

from pathlib import Path

import torch

from .sam_loader import SamConfig, build_sam

# img_size stays 1024 (SAM's preprocessing resizes to it); windowed attention only, because one
# global block over 64x64 tokens costs ~15x the rest on a CPU. Loader tests add a global block.
TINY_SAM_CONFIG = SamConfig(
    model_type="tiny", img_size=1024, patch_size=16, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
    encoder_mlp_ratio=2.0, encoder_window_size=4, encoder_global_attn_indexes=(), prompt_embed_dim=32,
    mask_in_chans=8, decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=8, iou_head_depth=2,
    iou_head_hidden_dim=16,
)

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "the", "sofa", "table", "lamp",
              "dog", "cat", "chair", "bed", "plant"]


def make_tiny_sam(seed: int = 0, config: SamConfig | None = None):
    torch.manual_seed(seed)
    return build_sam(config or TINY_SAM_CONFIG)


def save_tiny_sam(path, seed: int = 0, safetensors: bool = False, config: SamConfig | None = None):
    """Write a tiny random SAM as a plain state dict (``.pth``) or ``.safetensors``; returns the module."""
    sam = make_tiny_sam(seed, config)
    sd = {k: v.contiguous() for k, v in sam.state_dict().items()}
    path = Path(path)
    if safetensors:
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return sam


def save_tiny_grounding_dino(folder, seed: int = 0, num_queries: int = 3):
    """Write a tiny random Grounding DINO (swin + BERT, HF layout with processor) to ``folder``."""
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig)

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(TINY_VOCAB)})
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                      window_size=2, out_features=["stage2", "stage3", "stage4"])
    bert = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=64)
    # d_model must be a multiple of 32 (GroupNorm(32) in the input projections); 2 decoder
    # layers because the box heads of layers 1.. are tied to layer 0
    cfg = GroundingDinoConfig(backbone_config=swin, text_config=bert, d_model=32, encoder_layers=1, decoder_layers=2,
                              encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                              decoder_attention_heads=2, num_queries=num_queries, max_text_len=32,
                              encoder_n_points=1, decoder_n_points=1)
    model = GroundingDinoForObjectDetection(cfg).eval()
    model.save_pretrained(str(folder))
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return model
