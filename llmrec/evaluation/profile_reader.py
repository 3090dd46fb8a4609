"""The downstream reader that judges a profile text: an LLM answers a user's held-out item (next category,
rating) by option log-likelihood with the profile in its prompt (:mod:`llmrec.tasks.profile`), and the answers are
compared per example between profile kinds with a paired bootstrap interval.

Used by ``scripts/bench_profiles.py`` (zero-shot reader), ``scripts/bench_profiles_reader.py`` (fine-tuned reader)
and the profile-writer alignment (:mod:`llmrec.training.profile_pref`), whose reward is this reader's gain.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmrec.evaluation.ranking import bootstrap_ci
from llmrec.tasks.profile import expected_rating
from llmrec.tasks.uqa import normalize_answer

if TYPE_CHECKING:
    from llmrec.evaluation.models import HFModel
    from llmrec.tasks.profile import ProfileExample


def score_options_cached(reader: HFModel, prompt: str, options: Sequence[str]) -> np.ndarray:
    """Summed log-prob of each option as the answer to one prompt, like ``HFModel.score_options``, but the prompt
    runs once and the options reuse its KV cache: 18 multi-token genres would otherwise cost 18 full forwards."""
    import torch

    with torch.inference_mode():
        return _score_options_cached(reader, prompt, options)


def _score_options_cached(reader: HFModel, prompt: str, options: Sequence[str]) -> np.ndarray:
    import torch

    from llmrec.lm.decoding import cache_kwarg, output_cache

    tok, model = reader.tokenizer, reader.model
    ids = tok(reader.format(prompt), add_special_tokens=not reader.use_chat, return_tensors="pt")["input_ids"]
    ids = ids[:, -reader.max_prompt_tokens:].to(reader.device)
    out = model(input_ids=ids, use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    option_ids = [tok.encode(o, add_special_tokens=False) for o in options]
    scores = np.array([float(first[o[0]]) for o in option_ids])
    longest = max(len(o) for o in option_ids)
    if longest == 1:
        return scores
    # Options are right-padded: a pad only follows an option's real tokens, so causal attention never lets it
    # change their log-probs, and no attention mask is needed.
    rest = torch.tensor([o + [o[-1]] * (longest - len(o)) for o in option_ids], device=reader.device)
    cache = output_cache(out)
    cache.batch_repeat_interleave(len(options))
    positions = torch.arange(ids.shape[1], ids.shape[1] + longest, device=reader.device).expand(len(options), -1)
    # `cache=` where the forward takes it (transformers 5 warns on past_key_values=), as llmrec.lm.decoding does
    logits = model(input_ids=rest, position_ids=positions, **{cache_kwarg(model): cache}).logits
    logp = torch.log_softmax(logits.float(), -1)
    for j, o in enumerate(option_ids):
        scores[j] += float(sum(logp[j, t - 1, o[t]] for t in range(1, len(o))))
    return scores


def read_examples(reader: HFModel, profiles: Mapping[Any, str | None], examples: Sequence[ProfileExample],
                  key=lambda ex: ex.user_id) -> list[np.ndarray]:
    """Option log-probs of every example with ``profiles[key(example)]`` in its prompt (None = no profile)."""
    from llmrec.progress import progress
    from llmrec.tasks.profile import profile_downstream_prompt

    # ~0.5 s an example on one core: a few hundred examples per profile kind take minutes
    return [score_options_cached(reader, profile_downstream_prompt(profiles[key(ex)], ex), list(ex.options or ()))
            for ex in progress(examples, desc=f"reading {len(examples)} examples", unit="example")]


def outcomes_of(logps: Sequence[np.ndarray], examples: Sequence[ProfileExample]) -> dict[str, Any]:
    """Per-example outcomes from option log-probs: genre hits, rating errors (argmax / expected), answers."""
    hits, err_argmax, err_expected = [], [], []
    picked: dict[str, Counter] = {"next_genre": Counter(), "rating": Counter()}  # argmax answers: collapse shows
    for ex, logp in zip(examples, logps, strict=True):
        options = list(ex.options or ())
        picked[ex.task][options[int(logp.argmax())]] += 1
        if ex.task == "next_genre":
            hits.append(float(normalize_answer(options[int(logp.argmax())]) == normalize_answer(ex.answer)))
        else:
            gold = float(ex.answer)
            err_argmax.append(abs(float(options[int(logp.argmax())]) - gold))
            err_expected.append(abs(expected_rating(logp, options) - gold))
    return {"hits": np.array(hits), "err_argmax": np.array(err_argmax), "err_expected": np.array(err_expected),
            "picked": picked}


def delta(values: np.ndarray, base: np.ndarray, seed: int) -> dict[str, float]:
    """Paired mean difference (values - base, per example) with a 95% percentile-bootstrap CI over examples."""
    low, high = bootstrap_ci(np.asarray(values) - np.asarray(base), n_boot=1000, seed=seed)
    return {"value": round(float(np.mean(np.asarray(values) - np.asarray(base))), 4), "ci_low": round(low, 4),
            "ci_high": round(high, 4)}


def downstream_gain(logps: np.ndarray, base_logps: np.ndarray, example: ProfileExample) -> float:
    """What a profile adds to one downstream answer over no profile (higher = better), on a smooth scale so that
    candidates that would all miss the argmax still rank: ``next_genre``: the gain in log-probability of the true
    category among the options (log-softmax over the options); ``rating``: the drop in absolute error of the
    softmax-expected rating (the MAE the benchmark reports)."""
    logps, base_logps = np.asarray(logps, np.float64), np.asarray(base_logps, np.float64)
    options = list(example.options or ())
    if example.task == "next_genre":
        gold = [normalize_answer(o) for o in options].index(normalize_answer(example.answer))

        def norm(x: np.ndarray) -> float:
            return float(x[gold] - (x.max() + np.log(np.exp(x - x.max()).sum())))

        return norm(logps) - norm(base_logps)
    if example.task == "rating":
        gold = float(example.answer)
        return abs(expected_rating(base_logps, options) - gold) - abs(expected_rating(logps, options) - gold)
    from llmrec.errors import ConfigError

    raise ConfigError(f"no downstream gain for task {example.task!r}")


def sample_users(examples: Sequence[ProfileExample], n: int, seed: int) -> list[str]:
    """``n`` users (seeded) among those with both a next_genre and a rating row."""
    import random
    from collections import defaultdict

    tasks: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        tasks[ex.user_id].add(ex.task)
    eligible = sorted((u for u, t in tasks.items() if t >= {"next_genre", "rating"}), key=lambda u: (len(u), u))
    return sorted(random.Random(seed).sample(eligible, min(n, len(eligible))), key=lambda u: (len(u), u))


def summarize_kind(o: Mapping[str, Any]) -> dict[str, Any]:
    """Genre accuracy, rating MAE (expected / argmax) and the argmax answers of one kind's outcomes."""
    return {"next_genre": {"accuracy": round(float(o["hits"].mean()), 4) if len(o["hits"]) else None,
                           "n": len(o["hits"])},
            "rating": {"mae_expected": round(float(o["err_expected"].mean()), 4) if len(o["err_expected"]) else None,
                       "mae_argmax": round(float(o["err_argmax"].mean()), 4) if len(o["err_argmax"]) else None,
                       "n": len(o["err_expected"])},
            "argmax_answers": {task: dict(c.most_common(6)) for task, c in o["picked"].items()}}


def compare_kinds(logps: Mapping[str, Sequence[np.ndarray]], examples: Sequence[ProfileExample],
                  pairs: Sequence[tuple[str, str]], seed: int = 0) -> dict[str, Any]:
    """Per profile kind (its option log-probs over ``examples``): the summary, read raw and with contextual
    calibration (minus the ``none`` kind's log-probs, Zhao et al. 2021), and for each ``(kind, baseline)`` in
    ``pairs`` the paired differences with bootstrap 95% CIs: genre accuracy (higher = better) and rating MAE of
    the expected rating (lower = better)."""
    out: dict[str, Any] = {}
    for reading in ("raw", "calibrated"):
        if reading == "calibrated" and "none" not in logps:
            continue
        view = logps if reading == "raw" else {
            k: [lp - b for lp, b in zip(v, logps["none"], strict=True)] for k, v in logps.items()}
        outcomes = {k: outcomes_of(v, examples) for k, v in view.items()}
        section: dict[str, Any] = {"kinds": {k: summarize_kind(o) for k, o in outcomes.items()}, "deltas": {}}
        for kind, base in pairs:
            a, b = outcomes[kind], outcomes[base]
            section["deltas"][f"{kind}_vs_{base}"] = {
                "next_genre_accuracy": delta(a["hits"], b["hits"], seed) if len(a["hits"]) else None,
                "rating_mae_expected": delta(a["err_expected"], b["err_expected"], seed)
                if len(a["err_expected"]) else None}
        out[reading] = section
    return out
