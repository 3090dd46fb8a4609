"""Dense retrieval: the default sentence encoder (all-MiniLM-L6-v2; mean pooling, L2 norm) and faiss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from llmrec.retrieval.base import ProfileDoc

logger = logging.getLogger(__name__)


class MiniLMEncoder:
    """Any Hugging Face encoder folder (default: the offline all-MiniLM-L6-v2), mean-pooled and L2-normalised."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64, max_length: int = 256) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from llmrec.resources import minilm_dir

        self.path = Path(path) if path is not None else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path, dtype=torch.float32).eval()
        self.batch_size, self.max_length = batch_size, max_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        dim = self.model.config.hidden_size
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)


class DenseRetriever:
    """Inner product of normalised vectors via a faiss flat index over the question's profile.

    Vectors are cached by text, so a profile shared by many questions (or movie titles shared by many users)
    is encoded once; call :meth:`prepare` with every text up front to encode in large batches.
    """

    name = "dense"

    def __init__(self, encoder: Callable[[Sequence[str]], np.ndarray] | None = None) -> None:
        self._encoder = encoder
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def encoder(self) -> Callable[[Sequence[str]], np.ndarray]:
        if self._encoder is None:
            self._encoder = MiniLMEncoder()
        return self._encoder

    def prepare(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if todo:
            logger.info("dense retriever: encoding %d texts", len(todo))
            for t, v in zip(todo, self.encoder(todo), strict=True):
                self._vectors[t] = v

    def rank(self, query: str, docs: Sequence[ProfileDoc], key: str = "") -> list[int]:
        import faiss

        if not docs:
            return []
        self.prepare([query] + [d.text for d in docs])
        mat = np.stack([self._vectors[d.text] for d in docs]).astype(np.float32)
        index = faiss.IndexFlatIP(mat.shape[1])
        index.add(mat)
        _, idx = index.search(self._vectors[query][None, :].astype(np.float32), len(docs))
        return [int(i) for i in idx[0] if i >= 0]
