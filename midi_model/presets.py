"""Model sizes: tiny (the golden checkpoint's), medium (CPU benchmarks) and full (released).

The tests build random checkpoints of these sizes (``testing.write_random_checkpoint``) and
check on the meta device that the full-size tree has the released keys and shapes.
"""
from __future__ import annotations

PRESETS = {
    # the released sizes (class defaults + ViT-L/14 CLIP + DINOv2-L with 7 channels)
    "full": {
        "transformer": {"num_attention_heads": 16, "width": 2048, "in_channels": 64, "num_layers": 21,
                        "cross_attention_dim": 768, "cross_attention_2_dim": 1024},
        "vae": {"in_channels": 3, "latent_channels": 64, "num_attention_heads": 8, "width_encoder": 512,
                "width_decoder": 1024, "num_layers_encoder": 8, "num_layers_decoder": 16,
                "embedding_type": "frequency", "embed_frequency": 8, "embed_include_pi": False},
        "clip": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 768,
                 "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "dino": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "mlp_ratio": 4,
                 "patch_size": 14, "image_size": 518, "num_channels": 7, "layerscale_value": 1.0,
                 "layer_norm_eps": 1e-6, "hidden_act": "gelu", "qkv_bias": True},
    },
    # a few hundred MB of compute: realistic shapes for CPU benchmarks
    "medium": {
        "transformer": {"num_attention_heads": 8, "width": 512, "in_channels": 64, "num_layers": 21,
                        "cross_attention_dim": 256, "cross_attention_2_dim": 384},
        "vae": {"in_channels": 3, "latent_channels": 64, "num_attention_heads": 4, "width_encoder": 64,
                "width_decoder": 256, "num_layers_encoder": 1, "num_layers_decoder": 4,
                "embedding_type": "frequency", "embed_frequency": 8, "embed_include_pi": False},
        "clip": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "patch_size": 14, "image_size": 224, "projection_dim": 256, "hidden_act": "quick_gelu"},
        "dino": {"hidden_size": 384, "num_hidden_layers": 2, "num_attention_heads": 6, "mlp_ratio": 4,
                 "patch_size": 14, "image_size": 518, "num_channels": 7, "layerscale_value": 1.0,
                 "layer_norm_eps": 1e-6},
    },
    # the golden checkpoint's sizes
    "tiny": {
        "transformer": {"num_attention_heads": 4, "width": 96, "in_channels": 16, "num_layers": 21,
                        "cross_attention_dim": 40, "cross_attention_2_dim": 48},
        "vae": {"in_channels": 3, "latent_channels": 16, "num_attention_heads": 4, "width_encoder": 32,
                "width_decoder": 64, "num_layers_encoder": 1, "num_layers_decoder": 2,
                "embedding_type": "frequency", "embed_frequency": 8, "embed_include_pi": False},
        "clip": {"hidden_size": 32, "intermediate_size": 56, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "patch_size": 14, "image_size": 224, "projection_dim": 40, "hidden_act": "quick_gelu"},
        "dino": {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 4,
                 "patch_size": 14, "image_size": 518, "num_channels": 7, "layerscale_value": 1.0,
                 "layer_norm_eps": 1e-6},
    },
}
