"""The small model contract the harness talks to, an HF causal-LM implementation, and LLM-free baselines.

A model needs ``name`` and ``generate(prompts, max_new_tokens) -> list[str]`` (greedy, deterministic).
Optional, used when present:

* ``score_options(prompts, options) -> np.ndarray`` of shape ``(len(prompts), len(options))``: the log-probability
  of each option as the answer; classify takes the argmax, regress the probability-weighted mean of the
  numeric options (e.g. ``"1".."5"``) -- far more robust than parsing free text from a small model;
* ``recommend(histories, k) -> list[list[str]]``: top-``k`` item ids per history (oldest item first), items the
  user already has excluded -- what ``rank_items`` tasks call (the generative recommender implements it);
* ``predict(spec, examples) -> list[str]``: prompt-free predictors (the baselines below);
* ``supports(output_type) -> bool``: models that apply to some task types only (baselines, SASRec) are skipped on
  the others.

:func:`load_model` turns a ``--model`` spec into one of these: ``baseline:KIND``, ``sasrec:DIR``, a PersonalLM
directory or any causal LM.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from llmrec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@runtime_checkable
class EvalModel(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]: ...


class HFModel:
    """Any HF causal LM through :func:`llmrec.lm.loading.load_causal_lm`: chat template, left padding, greedy."""

    def __init__(
        self,
        name_or_path: str | None = None,
        *,
        dtype: str | None = None,
        device: str | None = None,
        chat_template: bool = True,
        max_prompt_tokens: int = 1024,
        system_prompt: str | None = None,
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        import torch

        from llmrec.lm.loading import load_causal_lm

        self.model, self.tokenizer = loaded or load_causal_lm(name_or_path, dtype=dtype, device=device)
        self.name = str(name_or_path or "smollm2-135m")
        self.device = next(self.model.parameters()).device
        self.dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")  # part of the cache key
        self.tokenizer.padding_side = "left"
        self.has_chat = getattr(self.tokenizer, "chat_template", None) is not None
        self.use_chat = chat_template and self.has_chat
        self.max_prompt_tokens = max_prompt_tokens
        self.system_prompt = system_prompt
        gc = self.model.generation_config
        # A model's generation_config can turn sampling on; evaluation must be greedy and deterministic.
        gc.do_sample, gc.num_beams, gc.temperature, gc.top_p, gc.top_k = False, 1, None, None, None
        torch.manual_seed(0)

    def set_chat(self, enabled: bool) -> None:
        """Per task: wrap prompts in the chat template (default) or send them raw for continuation."""
        self.use_chat = enabled and self.has_chat

    def format(self, prompt: str) -> str:
        if not self.use_chat:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, prompts: Sequence[str], answer_prefix: str = ""):
        texts = [self.format(p) + answer_prefix for p in prompts]
        # Keep the end of over-long prompts: the question sits after the retrieved profile.
        self.tokenizer.truncation_side = "left"
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                             max_length=self.max_prompt_tokens, add_special_tokens=not self.use_chat)
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, prompts: Sequence[str], max_new_tokens: int, answer_prefix: str = "") -> list[str]:
        """Greedy continuations; ``answer_prefix`` starts every reply (and is returned as part of it)."""
        import torch

        enc = self._encode(prompts, answer_prefix)
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1]:]
        return [(answer_prefix + t).strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def _forward_logprobs(self, input_ids, attention_mask):
        import torch

        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        return torch.log_softmax(logits.float(), dim=-1)

    def score_options(self, prompts: Sequence[str], options: Sequence[str]) -> np.ndarray:
        import torch

        option_ids = [self.tokenizer.encode(o, add_special_tokens=False) for o in options]
        enc = self._encode(prompts)
        if all(len(ids) == 1 for ids in option_ids):  # one forward pass: next-token distribution
            logp = self._forward_logprobs(enc["input_ids"], enc["attention_mask"])[:, -1, :]
            return logp[:, [ids[0] for ids in option_ids]].cpu().numpy()
        out = np.zeros((len(prompts), len(options)))
        for j, ids in enumerate(option_ids):  # multi-token options: sum the continuation's log-probs
            opt = torch.tensor(ids, device=self.device).expand(len(prompts), -1)
            input_ids = torch.cat([enc["input_ids"], opt], dim=1)
            mask = torch.cat([enc["attention_mask"], torch.ones_like(opt)], dim=1)
            logp = self._forward_logprobs(input_ids, mask)
            n = len(ids)
            steps = logp[:, -n - 1 : -1, :].gather(-1, opt.unsqueeze(-1)).squeeze(-1)
            out[:, j] = steps.sum(-1).cpu().numpy()
        return out


# ---- baselines that need no LLM ------------------------------------------------------------------------------


def _profile_number(p: dict[str, Any]) -> float | None:
    for key in ("rating", "score"):
        if key in p:
            try:
                return float(p[key])
            except (TypeError, ValueError):
                return None
    return None


def _profile_label(p: dict[str, Any]) -> str | None:
    if "tag" in p:
        return str(p["tag"])
    if "categories" in p:  # interaction-data profiles: the item's primary (first-listed) category
        return str(p["categories"]).split(", ")[0]
    return None


class Baseline:
    """Prompt-free predictors. ``user-mean`` / ``global-mean`` (regress), ``user-majority`` / ``majority``
    (classify), ``popularity`` (rank_items). Global statistics come from the profiles (training data) only:
    popularity counts the histories of every example of the task when :meth:`fit` was given them (the runner
    does, so ``--limit`` / ``--sample`` do not shrink it to a few users); the means and majorities pool the
    predicted examples' profiles (as the committed harness figures were measured)."""

    KINDS = {"user-mean": "regress", "global-mean": "regress", "user-majority": "classify",
             "majority": "classify", "popularity": "rank_items"}

    def __init__(self, kind: str) -> None:
        if kind not in self.KINDS:
            raise ConfigError(f"unknown baseline {kind!r}; use one of {sorted(self.KINDS)}")
        self.kind = kind
        self.name = f"baseline:{kind}"
        self._fitted: tuple[str, list[Any]] | None = None  # (task, examples) the global statistics come from
        self.fitted_on: int | None = None

    def supports(self, output_type: str) -> bool:
        return self.KINDS[self.kind] == output_type

    def fit(self, spec, examples) -> None:
        """Count item popularity for ``spec`` over ``examples`` (all of the task's) rather than the predicted few."""
        if self.kind == "popularity":
            self._fitted = (spec.task, list(examples))
            self.fitted_on = len(examples)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        raise ConfigError(f"{self.name} does not generate text; it predicts from profiles")

    def predict(self, spec, examples) -> list[str]:
        if not self.supports(spec.output.type):
            raise ConfigError(f"{self.name} does not apply to {spec.task} (output type {spec.output.type})")
        if self.kind in ("user-mean", "global-mean"):
            pooled = [v for ex in examples for p in ex.profile if (v := _profile_number(p)) is not None]
            global_mean = float(np.mean(pooled)) if pooled else float(np.mean(spec.output.range))
            if self.kind == "global-mean":
                return [f"{global_mean:.4f}"] * len(examples)
            out = []
            for ex in examples:
                vals = [v for p in ex.profile if (v := _profile_number(p)) is not None]
                out.append(f"{(np.mean(vals) if vals else global_mean):.4f}")
            return out
        if self.kind in ("majority", "user-majority"):
            labels = set(spec.output.labels)
            counts = Counter(lab for ex in examples for p in ex.profile if (lab := _profile_label(p)) in labels)
            overall = counts.most_common(1)[0][0] if counts else spec.output.labels[0]
            if self.kind == "majority":
                return [overall] * len(examples)
            out = []
            for ex in examples:
                c = Counter(lab for p in ex.profile if (lab := _profile_label(p)) in labels)
                # ties: the globally more frequent label, so the result does not depend on dict order
                out.append(max(c, key=lambda lab: (c[lab], counts[lab])) if c else overall)
            return out
        # popularity: most-interacted items across all training histories, the user's own removed
        pool = self._fitted[1] if self._fitted is not None and self._fitted[0] == spec.task else examples
        pop = Counter(i for ex in pool for i in ex.history)
        ranked = [i for i, _ in sorted(pop.items(), key=lambda kv: (-kv[1], kv[0]))]
        k = spec.output.k
        out = []
        for ex in examples:
            seen = set(ex.history)
            out.append(" ".join([i for i in ranked if i not in seen][:k]))
        return out


class PersonalLMModel(HFModel):
    """A trained PersonalLM directory: text tasks through its LM, ``rank_items`` through constrained decoding."""

    def __init__(self, path: str, *, dtype: str | None = "auto", **kwargs: Any) -> None:
        from llmrec.lm.personal import PersonalLM

        self.plm = PersonalLM.load(path, dtype=dtype)
        super().__init__(path, loaded=(self.plm.model, self.plm.tokenizer), **kwargs)

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[str]]:
        recs = self.plm.recommend_batch([list(h) for h in histories], k=k)
        return [[r["item_id"] for r in rs] for rs in recs]


class SasrecModel:
    """A trained SASRec-style sequence recommender directory (``scripts/train_sasrec.py``,
    :meth:`~llmrec.users.sequence.SequenceEncoder.save`) for ``rank_items`` tasks: the top-``k`` catalogue items
    by next-item score from the history's last ``max_len`` items, the user's own items excluded."""

    def __init__(self, path: str, *, batch_size: int = 256) -> None:
        from llmrec.users.sequence import SequenceEncoder

        self.path = path
        self.encoder = SequenceEncoder.load(path)
        if self.encoder.item_ids is None:
            raise ConfigError(f"{path}: this sequence model has no items.json, so its scores name no items")
        self.name = f"sasrec:{path}"
        self.batch_size = batch_size

    def supports(self, output_type: str) -> bool:
        return output_type == "rank_items"

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        raise ConfigError(f"{self.name} does not generate text; it ranks items (rank_items tasks)")

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> list[list[str]]:
        from llmrec.users.pretrain import score_histories

        try:
            seen = [self.encoder.item_indices(h, record=n) for n, h in enumerate(histories)]
        except DataError as exc:
            raise ConfigError(f"{self.name}: {exc.message} in history {exc.record}: not in this model's catalogue "
                              "(items.json); evaluate it on the dataset it was trained on") from exc
        scores = score_histories(self.encoder, [tuple(h) for h in histories], self.batch_size)
        item_ids = self.encoder.item_ids
        out = []
        for row, own in zip(scores, seen, strict=True):
            row = row.astype(np.float64)
            row[[i - 1 for i in own]] = -np.inf  # encoder index i + 1 = item_ids[i]
            top = np.lexsort((np.arange(len(row)), -row))[:k]  # ties by catalogue order
            out.append([item_ids[j] for j in top if np.isfinite(row[j])])
        return out


def _load_baseline(arg: str, **_: Any) -> Baseline:
    return Baseline(arg)


def _load_sasrec(arg: str, **_: Any) -> SasrecModel:
    return SasrecModel(arg)


# ``KIND:ARG`` model specs; add an entry to plug another model family into `llmrec eval run --model`.
MODEL_KINDS: dict[str, Callable[..., Any]] = {"baseline": _load_baseline, "sasrec": _load_sasrec}


def load_model(spec: str | None, **kwargs: Any):
    """``KIND:ARG`` with a registered kind (``baseline:popularity``, ``sasrec:DIR``, see :data:`MODEL_KINDS`);
    a PersonalLM directory -> :class:`PersonalLMModel`; a SASRec directory -> :class:`SasrecModel`; anything else (a path, hub id, ``smollm2-135m``) ->
    :class:`HFModel`. ``kwargs`` (e.g. ``dtype``) go to the LLM loaders only."""
    from pathlib import Path

    kind, _, arg = (spec or "").partition(":")
    if arg and kind in MODEL_KINDS:
        return MODEL_KINDS[kind](arg, **kwargs)
    if spec and (Path(spec) / "llmrec_config.json").is_file():
        return PersonalLMModel(spec, **kwargs)
    if spec and (Path(spec) / "items.json").is_file():  # a sequence recommender's folder (no HF model has one)
        return SasrecModel(spec)
    return HFModel(spec, **kwargs)
