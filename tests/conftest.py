"""Shared test fixtures. All offline, CPU, fast; the real ml-100k and SmolLM2 tokenizer come from the llmrec
cache, which `make test` fills first (`llmrec resources fetch`).

Models
    ``tiny_llama_dir`` (session) -> Path
        A folder holding a random tiny ``LlamaForCausalLM`` (hidden 64, 2 layers, 4 heads / 2 KV heads,
        tied embeddings, seed 0) saved as safetensors, next to the real SmolLM2-135M tokenizer files
        (49,152 tokens, ChatML chat template). Load it like any checkpoint:
        ``llmrec.lm.loading.load_causal_lm(tiny_llama_dir, dtype="fp32")``. Treat it as read-only.
    ``tiny_llama`` (function) -> TinyLM(model, tokenizer, path)
        Fresh copies (fp32, eval mode) of that model and tokenizer, safe to mutate (add tokens, wrap in PEFT,
        train a step); ~0.2 s.
    ``make_tiny_llama(**config_overrides)`` (function) -> Path
        A new tiny Llama folder under ``tmp_path`` with other config values, e.g. ``tie_word_embeddings=False``
        or ``num_hidden_layers=1``; ``seed=`` changes the weights.
    ``smollm2_tokenizer_dir`` (session) -> Path: the converted SmolLM2 folder (tokenizer + real weights).

Data
    ``ml100k`` (session) -> InteractionData: the real MovieLens-100k (943 users, 1,682 items, 100,000
        ratings), loaded once. Do not mutate it.
    ``ml_folder(layout="grouplens" | "recbole", **kw)`` (function) -> Path
        A small MovieLens folder in ``tmp_path`` (5 items incl. the latin-1 title "Misérables, Les", 3 users,
        10 ratings with a timestamp tie; see ``helpers.ML_ITEMS`` / ``ML_RATINGS``). ``kw`` goes to
        ``helpers.write_grouplens`` / ``write_recbole`` (``items=``, ``ratings=``, ``users=``).
    ``generic_files(fmt="jsonl", items=..., interactions=...)`` (function) -> (items_path, interactions_path)
        ``fmt`` is jsonl, json, csv, tsv or parquet (defaults: ``helpers.GENERIC_ITEMS`` / ``GENERIC_INTERACTIONS``).
    ``lamp_files(questions=None, outputs=None)`` (function) -> (questions_path, outputs_path)
        Official LaMP JSON shapes; defaults are three hand-written LaMP_3 questions and their golds.

Environment
    ``empty_cache`` (function) -> Path: ``LLMREC_CACHE`` points at an empty temp folder and
        ``LLMREC_NO_AUTO_FETCH=1``, so nothing is fetched or converted behind the test's back.

Markers: ``@pytest.mark.slow`` for tests that load the real default model (deselect with ``-m 'not slow'``).
Helpers for variants (``write_records``, ``write_tiny_gguf``, ...) live in ``tests/helpers.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers import make_tiny_llama_dir, write_generic, write_grouplens, write_lamp, write_recbole


class TinyLM(NamedTuple):
    model: Any
    tokenizer: Any
    path: Path


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir() -> Path:
    from llmrec.resources import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def _tiny_llama_loaded(tiny_llama_dir: Path) -> TinyLM:
    from llmrec.lm.loading import load_causal_lm

    model, tokenizer = load_causal_lm(tiny_llama_dir, dtype="fp32")
    return TinyLM(model, tokenizer, tiny_llama_dir)


@pytest.fixture
def tiny_llama(_tiny_llama_loaded: TinyLM) -> TinyLM:
    base = _tiny_llama_loaded
    return TinyLM(copy.deepcopy(base.model), copy.deepcopy(base.tokenizer), base.path)


@pytest.fixture
def make_tiny_llama(tmp_path: Path, smollm2_tokenizer_dir: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def make(seed: int = 0, **overrides: Any) -> Path:
        return make_tiny_llama_dir(tmp_path / f"tiny-llama-{next(counter)}", smollm2_tokenizer_dir, seed, **overrides)

    return make


@pytest.fixture(scope="session")
def ml100k():
    from llmrec.data import load_dataset

    return load_dataset("ml-100k")


@pytest.fixture
def ml_folder(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def make(layout: str = "grouplens", **kw: Any) -> Path:
        folder = tmp_path / f"ml-{layout}-{next(counter)}"
        if layout == "grouplens":
            return write_grouplens(folder, **kw)
        if layout == "recbole":
            return write_recbole(folder, **kw)
        raise ValueError(f"layout must be grouplens or recbole, got {layout!r}")

    return make


@pytest.fixture
def generic_files(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    counter = iter(range(1_000_000))

    def make(fmt: str = "jsonl", **kw: Any) -> tuple[Path, Path]:
        return write_generic(tmp_path / f"generic-{next(counter)}", fmt, **kw)

    return make


@pytest.fixture
def lamp_files(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    counter = iter(range(1_000_000))

    def make(questions: Any = None, outputs: Any = None) -> tuple[Path, Path]:
        return write_lamp(tmp_path / f"lamp-{next(counter)}", questions, outputs)

    return make


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    monkeypatch.setenv("LLMREC_CACHE", str(cache))
    monkeypatch.setenv("LLMREC_NO_AUTO_FETCH", "1")
    return cache
