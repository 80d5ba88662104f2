"""The BiomedCLIP architecture as configuration: open_clip model config and the text tower's BERT config.

BiomedCLIP (microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224) is an open_clip
`CustomTextCLIP`: a timm ViT-B/16 224 px image tower (token pooling, linear projection), a
PubMedBERT text tower (CLS of the last hidden state, MLP projection, 256 tokens), a 512-wide joint
embedding, and CLIP's image mean/std. The tiny and full-size random models the product builds for
tests and benchmarks use the same configuration with different sizes, so they run through exactly
the same open_clip, timm and transformers code as the real weights.
"""

from __future__ import annotations

from dataclasses import dataclass

BIOMEDCLIP_REPO = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
TEXT_TOWER_REPO = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
BIOMEDCLIP_LICENCE = "MIT"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
CONTEXT_LENGTH = 256
EMBED_DIM = 512

FULL_SIZE_VIT = "vit_base_patch16_224"
TINY_VIT = "biomedclip_tiny_vit_patch16_224"
"""A timm ViT-B/16-family model with a narrow, shallow trunk; registered by models/timm_variants.py."""


@dataclass(frozen=True)
class TextTowerSize:
    """The size parameters of the BERT text tower (everything else is BERT-base's defaults)."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


BERT_BASE = TextTowerSize(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
TINY_BERT = TextTowerSize(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def open_clip_config(timm_model_name: str = FULL_SIZE_VIT) -> dict:
    """The `open_clip_config.json` document of a BiomedCLIP-architecture model.

    `hf_model_name`/`hf_tokenizer_name` keep the upstream text tower's name for provenance; the
    product never resolves them on the hub - models/open_clip_loading.py points them at the model
    folder's own `config.json` and tokenizer at load time.
    """
    return {
        "model_cfg": {
            "embed_dim": EMBED_DIM,
            "vision_cfg": {
                "timm_model_name": timm_model_name,
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": IMAGE_SIZE,
            },
            "text_cfg": {
                "hf_model_name": TEXT_TOWER_REPO,
                "hf_tokenizer_name": TEXT_TOWER_REPO,
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": CONTEXT_LENGTH,
            },
        },
        "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
    }


def bert_config_kwargs(size: TextTowerSize, vocab_size: int, pad_token_id: int) -> dict:
    """Keyword arguments for `transformers.BertConfig` describing the text tower."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": size.hidden_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "intermediate_size": size.intermediate_size,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "pad_token_id": pad_token_id,
    }
