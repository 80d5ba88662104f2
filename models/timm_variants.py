"""timm image towers the product registers itself (imports timm and torch: load lazily).

open_clip builds a timm image tower by name only (`timm.create_model(timm_model_name, ...)`), so a
smaller ViT-B/16-family trunk for fast tests has to exist under a timm model name. It is timm's own
`vit_base_patch16_224` entry point with a narrower, shallower trunk: same patch embedding,
class token, position embedding, pre-norm blocks and final norm, i.e. the same code path.
"""

from __future__ import annotations

from models.architecture import TINY_VIT

TINY_VIT_ARGS = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def register_timm_variants() -> None:
    """Make the product's own timm model names known to `timm.create_model` (idempotent)."""
    import timm
    from timm.models import register_model

    if timm.is_model(TINY_VIT):
        return

    def biomedclip_tiny_vit_patch16_224(pretrained: bool = False, **kwargs):
        """ViT-B/16 224 px family, 32 wide, 2 blocks, 2 heads; built only from random weights."""
        if pretrained:
            raise ValueError(f"timm model {TINY_VIT} has no pretrained weights")
        return timm.create_model("vit_base_patch16_224", pretrained=False, **{**TINY_VIT_ARGS, **kwargs})

    biomedclip_tiny_vit_patch16_224.__name__ = TINY_VIT
    register_model(biomedclip_tiny_vit_patch16_224)
