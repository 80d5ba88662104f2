"""The text tower's WordPiece tokenizer, loaded from the model folder with `tokenizers` (no torch).

It produces what open_clip's `HFTokenizer` produces for BiomedCLIP (whitespace-cleaned text,
[CLS] ... [SEP], truncated to the context length) except that the batch is padded only to its
longest real sequence instead of the full 256-token context. The text tower attends only to
unmasked tokens and pools the [CLS] position, so the trimmed padding changes nothing but the
amount of work (tests check the embeddings are equal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.directory import TOKENIZER_CONFIG, ModelDirectory
from models.errors import ModelDirectoryError

_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and attention mask, both (N, L) int64, L = the longest real sequence of the batch."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def clean_text(text: str) -> str:
    """Collapse runs of whitespace and strip, as open_clip's `whitespace` cleaning does."""
    return _WHITESPACE.sub(" ", text).strip()


class TextTokenizer:
    """Tokenizes prompt texts for the model's text tower."""

    def __init__(self, tokenizer_file: Path, context_length: int, pad_token: str = "[PAD]") -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust tokenizer raises plain Exception on unreadable or malformed files
            raise ModelDirectoryError(f"{tokenizer_file}: cannot load the tokenizer ({exc})") from exc
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ModelDirectoryError(f"{tokenizer_file}: the padding token {pad_token!r} is not in the vocabulary")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=context_length)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # pads to the batch's longest sequence
        self._tokenizer = tokenizer
        self.context_length = context_length
        self.pad_id = pad_id

    @classmethod
    def from_model(cls, model: ModelDirectory) -> "TextTokenizer":
        """The tokenizer of a model folder, padded with the pad token its text tower masks out."""
        pad_token = "[PAD]"
        config_path = model.path / TOKENIZER_CONFIG
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelDirectoryError(f"{config_path}: cannot read the tokenizer configuration ({exc})") from exc
            configured = config.get("pad_token") if isinstance(config, dict) else None
            if isinstance(configured, dict):  # older files store special tokens as AddedToken mappings
                configured = configured.get("content")
            if isinstance(configured, str) and configured:
                pad_token = configured
        tokenizer = cls(model.tokenizer_path, model.context_length, pad_token)
        try:
            text_config = json.loads(model.text_config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelDirectoryError(f"{model.text_config_path}: cannot read the text tower configuration ({exc})") from exc
        expected = text_config.get("pad_token_id", 0) if isinstance(text_config, dict) else 0
        if expected is not None and expected != tokenizer.pad_id:
            raise ModelDirectoryError(
                f"{model.tokenizer_path}: padding token id {tokenizer.pad_id} differs from pad_token_id {expected} "
                f"in {model.text_config_path}; the tokenizer does not belong to this text tower"
            )
        return tokenizer

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Tokenize `texts` into one batch trimmed to its longest sequence (at most the context length)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("no texts to tokenize")
        encodings = self._tokenizer.encode_batch([clean_text(t) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return TokenBatch(ids, mask)
