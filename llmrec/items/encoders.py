"""Item text -> vector: a Jinja template renders each item, a Hugging Face model embeds it.

Two model kinds share one config: ``kind="encoder"`` (any ``AutoModel`` encoder, e.g. the offline default
all-MiniLM-L6-v2, mean-pooled and L2-normalised) and ``kind="causal"`` (mean of a causal LM's last hidden
states). Vectors are cached on disk under ``<cache>/vectors/`` keyed by a hash of the model fingerprint and
the exact texts, so a second run with the same model and template does not re-encode.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.config import Config
from llmrec.data.schema import InteractionData, Item
from llmrec.errors import ConfigError, DataError
from llmrec.io import atomic_path
from llmrec.package_data import data_candidates

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "prompts/item_text.jinja"
_KINDS = ("encoder", "causal")
_POOLINGS = ("mean", "cls", "last")


@dataclass
class EncoderConfig(Config):
    """Which model embeds item text, and how.

    ``model``: alias ``all-minilm-l6-v2`` (offline default), a hub id or a local folder.
    ``kind``: ``encoder`` (``AutoModel``) or ``causal`` (``AutoModelForCausalLM`` hidden states).
    ``pooling``: ``mean`` over non-padding tokens, ``cls`` (first token) or ``last`` (last real token).
    """

    model: str = "all-minilm-l6-v2"
    kind: str = "encoder"
    pooling: str = "mean"
    normalize: bool = True
    batch_size: int = 64
    max_length: int = 128
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"encoder.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.pooling not in _POOLINGS:
            raise ConfigError(f"encoder.pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.batch_size < 1 or self.max_length < 1:
            raise ConfigError("encoder.batch_size and encoder.max_length must be >= 1")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"encoder.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


class ItemEncoder:
    """Embeds texts with a Hugging Face model; the model is loaded on first use."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        self.config = config or EncoderConfig()
        self._model: Any = None
        self._tokenizer: Any = None
        self._path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            from llmrec.resources import resolve_encoder

            self._path = resolve_encoder(self.config.model)
        return self._path

    def fingerprint(self) -> str:
        """Identifies the model and settings for the vector cache (local weights by name, size and mtime)."""
        cfg = self.config.to_dict()
        for key in ("batch_size", "device"):  # do not change the vectors (beyond float noise)
            cfg.pop(key)
        cfg["path"] = self.path
        local = Path(self.path)
        if local.is_dir():
            cfg["weights"] = sorted(
                (p.name, p.stat().st_size, int(p.stat().st_mtime))
                for p in local.iterdir()
                if p.suffix in (".safetensors", ".bin")
            )
        return json.dumps(cfg, sort_keys=True)

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        dtype = getattr(torch, self.config.dtype)
        kwargs = {"dtype": dtype, "trust_remote_code": self.config.trust_remote_code}
        logger.info("loading %s encoder from %s", self.config.kind, self.path)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.config.trust_remote_code)
        if self._tokenizer.pad_token is None:  # causal LMs often have none; padding is masked out anyway
            self._tokenizer.pad_token = self._tokenizer.eos_token
        cls = AutoModelForCausalLM if self.config.kind == "causal" else AutoModel
        self._model = cls.from_pretrained(self.path, **kwargs).to(self.config.device).eval()

    def encode_texts(self, texts: Sequence[str], show_progress: bool = True) -> np.ndarray:
        """``[len(texts), d]`` float32, rows in input order."""
        import torch

        from llmrec.progress import progress

        self._load()
        cfg = self.config
        # Batch texts of similar length together (less padding), then restore the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[np.ndarray] = []
        starts = range(0, len(order), cfg.batch_size)
        with torch.inference_mode():
            for start in progress(starts, desc=f"encoding {len(texts)} texts", unit="batch", enable=show_progress):
                batch = [texts[i] for i in order[start : start + cfg.batch_size]]
                enc = self._tokenizer(
                    batch, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt"
                ).to(cfg.device)
                if cfg.kind == "causal":
                    hidden = self._model(**enc, output_hidden_states=True).hidden_states[-1]
                else:
                    hidden = self._model(**enc).last_hidden_state
                out.append(_pool(hidden.float(), enc["attention_mask"], cfg.pooling).cpu().numpy())
        vectors = np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
        result = np.empty_like(vectors)
        result[np.asarray(order, dtype=np.int64)] = vectors
        if cfg.normalize and len(result):
            result /= np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-12)
        return result.astype(np.float32, copy=False)


def _pool(hidden, mask, pooling: str):
    import torch

    mask = mask.to(hidden.dtype)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":  # last non-padding token, whichever side the tokenizer pads
        idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask) * mask
        return hidden[torch.arange(hidden.shape[0]), idx.argmax(dim=1).long()]
    summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
    return summed / mask.sum(dim=1, keepdim=True).clamp_min(1.0)


def _as_items(data_or_items: InteractionData | Mapping[str, Item] | Iterable[Item]) -> list[Item]:
    if isinstance(data_or_items, InteractionData):
        return list(data_or_items.items.values())
    if isinstance(data_or_items, Mapping):
        return list(data_or_items.values())
    return list(data_or_items)


def load_template(template: str | Path = DEFAULT_TEMPLATE):
    """A sandboxed, StrictUndefined Jinja template from a file (absolute, cwd-relative, a user or built-in
    ``prompts/`` file) or a string."""
    from jinja2 import TemplateError

    from llmrec.prompting import environment

    source = str(template)
    looks_like_path = isinstance(template, Path) or source.endswith((".jinja", ".j2", ".jinja2"))
    if looks_like_path:
        path = Path(source)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, *data_candidates(path)]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise ConfigError(f"item text template not found: {source} (looked in {', '.join(map(str, candidates))})")
        source = found.read_text(encoding="utf-8")
    try:
        return environment().from_string(source)
    except TemplateError as exc:
        raise ConfigError(f"item text template {str(template)[:80]!r} does not parse: {exc}") from exc


def item_texts(
    data_or_items: InteractionData | Mapping[str, Item] | Iterable[Item], template: str | Path = DEFAULT_TEMPLATE
) -> list[str]:
    """Render one text per item (catalogue order). An item whose text has no letter or digit is an error.
    Given an ``InteractionData``, templates also get ``item_categories``: the item's values of the dataset's
    category attribute(s) (``category_fields``)."""
    from jinja2 import TemplateError

    from llmrec.data.schema import item_categories

    items = _as_items(data_or_items)
    if not items:
        raise DataError("the catalogue is empty: no items to encode", field="items")
    tmpl = load_template(template)
    fields = data_or_items.category_fields if isinstance(data_or_items, InteractionData) else None
    texts = []
    for item in items:
        context = {**item.attributes, "attributes": item.attributes, "title": item.title, "item_id": item.item_id}
        if fields is not None:
            context["item_categories"] = item_categories(item, fields)
        try:
            text = " ".join(tmpl.render(**context).split())
        except TemplateError as exc:
            raise DataError(f"item text template failed: {exc}", record=item.item_id, field="title") from exc
        if not any(ch.isalnum() for ch in text):
            raise DataError(f"item has no text to encode (rendered {text!r})", record=item.item_id, field="title")
        texts.append(text)
    return texts


def encode_items(
    data_or_items: InteractionData | Mapping[str, Item] | Iterable[Item],
    encoder: ItemEncoder | EncoderConfig | str | None = None,
    template: str | Path = DEFAULT_TEMPLATE,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    use_cache: bool = True,
) -> np.ndarray:
    """Item vectors ``[n_items, d]`` float32 in catalogue order, cached on disk by model and text.

    ``encoder`` is an ``ItemEncoder``, an ``EncoderConfig``, a model alias/hub id/folder, or ``None`` (MiniLM).
    ``cache_dir`` overrides the llmrec cache root (vectors go to ``<root>/vectors/``).
    """
    if not isinstance(encoder, ItemEncoder):
        if encoder is None or isinstance(encoder, str):
            encoder = EncoderConfig() if encoder is None else EncoderConfig(model=encoder)
        encoder = ItemEncoder(encoder)
    texts = item_texts(data_or_items, template)
    digest = hashlib.sha256()
    digest.update(encoder.fingerprint().encode())
    for text in texts:
        digest.update(b"\0" + text.encode())
    cache_file = None
    if use_cache:
        from llmrec.resources import cache_dir as llmrec_cache

        cache_file = llmrec_cache(cache_dir) / "vectors" / f"{digest.hexdigest()[:32]}.npy"
        if cache_file.is_file():
            vectors = np.load(cache_file, allow_pickle=False)
            if vectors.shape[0] == len(texts):
                logger.info("item vectors from cache %s", cache_file)
                return vectors
    vectors = encoder.encode_texts(texts, show_progress=show_progress)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, vectors, allow_pickle=False)
        logger.info("cached %d item vectors in %s", len(vectors), cache_file)
    return vectors
