"""Trie-constrained beam search over semantic IDs, and exact whole-catalogue scoring.

Only real items can come out: at every level a beam may only take a code that continues at least one valid,
non-excluded item. The prompt runs once per user; its KV cache is repeated across beams and reordered as beams
are selected. Settings never come from a model's ``generation_config`` (no sampling can leak in).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from llmrec.items.trie import SidTrie
from llmrec.lm.sid_vocab import column_log_softmax, restricted_log_softmax, vocab_tensor


@dataclass(frozen=True)
class Recommendation:
    item_index: int  # row in the catalogue / SID table
    score: float  # sum of token log-probabilities of the item's semantic ID (+ weighted log prior when fused)


def _prefix_counts(rows: Iterable[Sequence[int]]) -> dict[tuple[int, ...], int]:
    """How many of ``rows`` (code tuples) sit under each non-empty prefix."""
    out: dict[tuple[int, ...], int] = {}
    for row in rows:
        for level in range(1, len(row) + 1):
            p = tuple(row[:level])
            out[p] = out.get(p, 0) + 1
    return out


class PrefixIndex:
    """The semantic-ID prefix trie (:class:`~llmrec.items.trie.SidTrie`) plus item counts per prefix for exclusion.

    Built from the ``[n_items, L]`` code table; every item's code tuple must be unique.
    """

    def __init__(self, codes: np.ndarray, level_offsets: Sequence[int]) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise ValueError("codes must be a non-empty [n_items, levels] array")
        if len({tuple(r) for r in codes.tolist()}) != codes.shape[0]:
            raise ValueError("semantic IDs are not unique; constrained decoding needs one item per code tuple")
        self.codes = codes
        self.n_items, self.levels = codes.shape
        self.level_offsets = list(level_offsets)
        self.trie = SidTrie(codes, codes.max(axis=0) + 1)
        self.counts = _prefix_counts(codes.tolist())
        # per level: the distinct prefixes and each item's prefix number (for prior masses under a prefix)
        self._groups = []
        for level in range(1, self.levels + 1):
            uniq, inv = np.unique(codes[:, :level], axis=0, return_inverse=True)
            self._groups.append(([tuple(u) for u in uniq.tolist()], inv.reshape(-1)))

    @property
    def token_span(self) -> tuple[int, int]:
        """``(lo, hi)``: every SID token an item uses lies in ``lo..hi-1``."""
        lo = min(self.level_offsets)
        hi = max(off + int(self.codes[:, lv].max()) + 1 for lv, off in enumerate(self.level_offsets))
        return lo, hi

    def token_ids(self, item_index: int) -> list[int]:
        return [self.level_offsets[lv] + int(c) for lv, c in enumerate(self.codes[item_index])]

    def log_mass(self, log_prior: np.ndarray, excluded: Sequence[int] = ()) -> dict[tuple[int, ...], float]:
        """log of the prior probability of the items under each prefix (``log_prior``: one log-probability per
        item row), excluded items left out: the fusion term of a partial semantic ID, the item's own log-prior
        once the ID is complete."""
        lp = np.asarray(log_prior, dtype=np.float64).copy()
        if lp.shape != (self.n_items,):
            raise ValueError(f"log_prior must have one value per item ({self.n_items}), got shape {lp.shape}")
        lp[list(excluded)] = -np.inf
        out: dict[tuple[int, ...], float] = {}
        for prefixes, inv in self._groups:
            mass = np.full(len(prefixes), -np.inf)
            np.logaddexp.at(mass, inv, lp)
            out.update(zip(prefixes, mass.tolist(), strict=True))
        return out

    def excluded_counts(self, excluded: Sequence[int]) -> dict[tuple[int, ...], int]:
        """How many excluded items sit under each prefix (a prefix is dead when all its items are excluded)."""
        return _prefix_counts(self.codes[sorted(set(excluded))].tolist())


def _forward_parameters(model) -> Mapping[str, inspect.Parameter]:
    """The parameters of the wrapped HF model's ``forward`` (none where ``model`` holds no transformers model)."""
    from llmrec.errors import ConfigError
    from llmrec.lm.attention import transformers_model

    try:
        return inspect.signature(transformers_model(model).forward).parameters
    except ConfigError:
        return {}


def cache_kwarg(model) -> str:
    """The name the wrapped HF model's ``forward`` takes its KV cache by: ``cache`` in recent transformers 5.x
    (``past_key_values`` still works there but warns), ``past_key_values`` before that and in remote-code models."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


@contextmanager
def merged_trainable_tokens(model) -> Iterator[None]:
    """Write PEFT's trainable SID-token rows into the (tied) embedding for the duration, then put the originals
    back. Unmerged, every forward rebuilds the whole ``[vocab, d]`` embedding and LM head with ``index_copy``
    (a third of a single user's decoding time); merging these rows is a copy, so unmerging is exact (unlike
    merging LoRA in bf16) and training is unaffected."""
    try:
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    except ImportError:  # no PEFT, nothing to merge
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer) and not m.merged
              and not m.disable_adapters and m.active_adapters]
    merged = []
    try:
        for layer in layers:
            layer.merge()
            merged.append(layer)
        yield
    finally:
        for layer in reversed(merged):
            layer.unmerge()


def _tokens_merged(fn):
    """Run ``fn(model, ...)`` inside :func:`merged_trainable_tokens`."""
    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        with merged_trainable_tokens(model):
            return fn(model, *args, **kwargs)

    return run


@functools.cache
def _roomy_layer_class():
    """A ``DynamicLayer`` whose buffers keep room for the few tokens beam search appends: ``update`` writes them
    in place instead of ``torch.cat`` copying the whole cache (with the beam reorder, one of two full copies of the
    KV cache per layer and step), and ``reorder_cache`` gathers the rows into a new buffer with the same room."""
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
            super().__init__()
            self.device, self.is_initialized, self.length = keys.device, True, keys.shape[-2]
            shape = (*keys.shape[:-2], self.length + room, keys.shape[-1])
            self._k, self._v = keys.new_empty(shape), values.new_empty(shape)
            self._k[..., : self.length, :] = keys
            self._v[..., : self.length, :] = values
            self._views()

        def _views(self) -> None:
            self.keys, self.values = self._k[..., : self.length, :], self._v[..., : self.length, :]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if end > self._k.shape[-2]:  # out of room (never in beam search): grow as DynamicLayer does
                self._k = torch.cat([self.keys, key_states], dim=-2)
                self._v = torch.cat([self.values, value_states], dim=-2)
            else:
                self._k[..., self.length : end, :] = key_states
                self._v[..., self.length : end, :] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self._k = self._k.index_select(0, beam_idx.to(self._k.device))
            self._v = self._v.index_select(0, beam_idx.to(self._v.device))
            self._views()

    return RoomyLayer


def _plain_dynamic_layers(cache, room: int) -> list | None:
    """The layers of ``cache`` where beam search may replace them: a ``DynamicCache`` of plain ``DynamicLayer``s
    and at least one token to append; None otherwise (sliding windows, remote-code caches)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(cache, "layers", None)
    if room < 1 or not isinstance(cache, DynamicCache) or not layers or any(type(x) is not DynamicLayer
                                                                            for x in layers):
        return None
    return layers


def with_room(cache, room: int):
    """``cache`` (a prompt's ``DynamicCache``) with room for ``room`` more tokens per layer (:func:`_roomy_layer_class`);
    any other cache (sliding windows, remote-code models) is returned as it is."""
    layers = _plain_dynamic_layers(cache, room)
    if layers is None:
        return cache
    roomy = _roomy_layer_class()
    cache.layers = [roomy(x.keys, x.values, room) for x in layers]
    return cache


@functools.cache
def _shared_prefix_layer_class():
    """A roomy layer (:func:`_roomy_layer_class`) for each beam's own appended tokens only, beside the prompt's
    key/value states kept once per prompt (:class:`~llmrec.lm.attention.SharedPrefix`): a reorder gathers only the
    beams' few tokens, and ``update`` hands the attention the beams' states with the shared prefix attached, which
    only :func:`~llmrec.lm.attention.cpu_attention` reads (:func:`shared_prefix_cache` checks that it is the
    kernel)."""
    from llmrec.lm.attention import SharedPrefix

    class SharedPrefixLayer(_roomy_layer_class()):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
            super().__init__(keys[..., :0, :], values[..., :0, :], room)  # no own tokens yet
            self.prefix = SharedPrefix(keys, values)
            self.owner = torch.arange(keys.shape[0], device=keys.device)  # the prefix row each row reads

        def get_seq_length(self) -> int:
            return self.prefix.keys.shape[-2] + self.length

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            keys, values = super().update(key_states, value_states)
            keys.shared_prefix = self.prefix  # a fresh view each call: the tag goes nowhere else
            return keys, values

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            super().reorder_cache(beam_idx)
            self.owner = self.owner.index_select(0, beam_idx.to(self.owner.device))
            n, rows = self.prefix.keys.shape[0], len(beam_idx)
            blocks = torch.arange(rows, device=self.owner.device)
            if rows % n or not torch.equal(self.owner, blocks // (rows // n)):
                # rows left their prompt's block (never in beam search): give every row its own copy
                self.prefix = SharedPrefix(*(x.index_select(0, self.owner) for x in self.prefix))
                self.owner = blocks

    return SharedPrefixLayer


def shared_prefix_cache(model, cache, room: int):
    """``cache`` (a prompt's ``DynamicCache``) with its states shared by the rows that reorders later derive from
    each prompt row, and room for ``room`` appended tokens per row (:func:`_shared_prefix_layer_class`), where
    ``model`` attends with llmrec's CPU kernel; otherwise :func:`with_room`."""
    from llmrec.lm.attention import ATTENTION, current_attention

    layers = _plain_dynamic_layers(cache, room)
    if layers is None or current_attention(model) != ATTENTION:
        return with_room(cache, room)
    shared = _shared_prefix_layer_class()
    cache.layers = [shared(x.keys, x.values, room) for x in layers]
    return cache


def output_cache(out):
    """The KV cache of a forward's output, under either name (reading ``past_key_values`` warns where renamed)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def last_logits_only(model, width: int) -> dict[str, torch.Tensor]:
    """``{"logits_to_keep": [width - 1]}`` where the wrapped HF model's ``forward`` takes it: the LM head over the
    last prompt position only (a prompt pass otherwise builds ``[batch, prompt, vocab]`` logits, ~15 % of its
    multiply-adds at SmolLM2's 49k vocabulary, to read one row of them). An index tensor, not the int 1: the int
    slices a strided ``[batch, 1, d]`` view, which bf16 ``F.linear`` on CPU runs as a batched matmul over a copy of
    the LM head per row (measured: 1.8 s for 12 prompts); indexing gathers a contiguous one."""
    if "logits_to_keep" not in _forward_parameters(model):
        return {}
    return {"logits_to_keep": torch.tensor([width - 1], device=next(model.parameters()).device)}


def _forward(model, input_ids, attention_mask, position_ids, past, span: tuple[int, int],
             cache_name: str = "past_key_values", vocab: torch.Tensor | None = None, **extra):
    """One KV-cached step -> (log-probabilities of the token columns ``span`` at the last position, the cache);
    ``extra`` holds further model inputs (``logits_to_keep``, a prompt's user states)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **{cache_name: past},
        **extra,
    )
    return column_log_softmax(out.logits[:, -1, :], vocab, *span), output_cache(out)


@torch.no_grad()
@_tokens_merged
def constrained_beam_search(
    model,
    prompts: Sequence[Sequence[int]],
    index: PrefixIndex,
    *,
    k: int = 10,
    num_beams: int | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
    pad_token_id: int = 0,
    prompt_inputs: dict[str, torch.Tensor] | None = None,
    log_prior: np.ndarray | None = None,
    prior_weight: float = 1.0,
    vocab: Sequence[int] | None = None,
) -> list[list[Recommendation]]:
    """Top-``k`` distinct real items per prompt, best first.

    ``prompts`` are token-id lists (one per user, left-padded here as a batch); ``exclude`` holds, per prompt,
    item indices that may not be returned (e.g. the user's history). ``num_beams`` defaults to ``k``.
    ``prompt_inputs``: extra model inputs for the prompt pass only (e.g. ``user_item_idx`` of user-state models).
    ``log_prior`` ``[n_prompts, n_items]``: shallow fusion with another recommender's item log-probabilities
    (e.g. SASRec's): a partial ID is ranked by its LLM log-probability + ``prior_weight`` x the log prior mass of
    the items under it, a complete one by LLM + ``prior_weight`` x its own log prior (its returned score).
    ``vocab``: token ids each step's distribution is normalised over (the SID tokens of a model trained with the
    SID-vocabulary loss, :mod:`llmrec.lm.sid_vocab`); None = the whole vocabulary. Either way the search takes the
    trie's allowed codes from that distribution without renormalising over them, as training scores each token.
    """
    beams = max(num_beams or k, k)
    n = len(prompts)
    device = next(model.parameters()).device
    exclude = exclude or [[] for _ in range(n)]
    ex_counts = [index.excluded_counts(e) for e in exclude]
    if log_prior is not None and len(log_prior) != n:
        raise ValueError(f"log_prior has {len(log_prior)} rows for {n} prompts")
    masses = [index.log_mass(log_prior[u], exclude[u]) for u in range(n)] if log_prior is not None else None

    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_name = cache_kwarg(model)
    vocab = vocab_tensor(vocab, device)
    span = index.token_span  # the log-probability columns read: SID token t is column t - span[0]
    logp, past = _forward(model, ids, mask, pos, None, span, cache_name, vocab, **last_logits_only(model, width),
                          **(prompt_inputs or {}))
    past = shared_prefix_cache(model, past, index.levels - 1)

    # Beam state per user: list of (prefix codes, score); expanded to n * beams rows after the first level.
    prefixes: list[list[tuple[int, ...]]] = [[()] for _ in range(n)]
    scores: list[list[float]] = [[0.0] for _ in range(n)]  # LLM log-probability of each beam's prefix
    ranks: list[list[float]] = [[0.0] for _ in range(n)]  # what beams are ranked by (= scores without a prior)
    rows_per_user = 1
    next_pos = pos[:, -1] + 1
    for level in range(index.levels):
        off = index.level_offsets[level]
        col = off - span[0]  # lp holds the columns of tokens span[0]..span[1]-1
        lp = logp.cpu().numpy()
        new_prefixes, new_scores, new_ranks, parent_rows, chosen_tokens = [], [], [], [], []
        for u in range(n):
            cand: list[tuple[float, float, int, tuple[int, ...]]] = []
            for b, (prefix, s) in enumerate(zip(prefixes[u], scores[u], strict=True)):
                row = u * rows_per_user + b
                codes = index.trie.next_codes(prefix)
                if not len(codes):
                    continue
                for c, v in zip(codes.tolist(), lp[row, col + codes].tolist(), strict=True):
                    p = prefix + (c,)
                    if ex_counts[u].get(p, 0) >= index.counts[p]:
                        continue  # every item below this prefix is excluded
                    rank = s + v if masses is None else s + v + prior_weight * masses[u][p]
                    cand.append((rank, s + v, row, p))
            cand.sort(key=lambda t: (-t[0], t[3]))  # deterministic ties: by code tuple
            top = cand[:beams]
            if not top:
                raise ValueError(f"prompt {u}: no item left to recommend after exclusion")
            # Pad to a fixed beam count so the batch stays rectangular; padded beams are dropped at the end.
            while len(top) < beams:
                top.append((-np.inf, -np.inf, top[0][2], top[0][3]))
            new_prefixes.append([t[3] for t in top])
            new_ranks.append([t[0] for t in top])
            new_scores.append([t[1] for t in top])
            parent_rows.extend(t[2] for t in top)
            chosen_tokens.extend(off + t[3][-1] for t in top)
        prefixes, scores, ranks = new_prefixes, new_scores, new_ranks
        if level == index.levels - 1:
            break
        # after the prompt the parent rows are the users' rows: one gather both repeats and orders the cache
        sel = torch.tensor(parent_rows, dtype=torch.long, device=device)
        past.reorder_cache(sel)
        mask = torch.cat([mask.index_select(0, sel), torch.ones((len(sel), 1), dtype=mask.dtype, device=device)], -1)
        cur_pos = next_pos.index_select(0, sel)
        tok = torch.tensor(chosen_tokens, dtype=torch.long, device=device).unsqueeze(-1)
        logp, past = _forward(model, tok, mask, cur_pos.unsqueeze(-1), past, span, cache_name, vocab)
        next_pos = cur_pos + 1
        rows_per_user = beams

    results: list[list[Recommendation]] = []
    for u in range(n):
        items = [
            Recommendation(index.trie.row(p), float(r))
            for p, r in zip(prefixes[u], ranks[u], strict=True)
            if np.isfinite(r)
        ]
        results.append(items[:k])
    return results


@torch.no_grad()
@_tokens_merged
def score_all_items(
    model,
    prompt: Sequence[int],
    index: PrefixIndex,
    *,
    chunk_size: int = 512,
    prompt_inputs: dict[str, torch.Tensor] | None = None,
    vocab: Sequence[int] | None = None,
) -> np.ndarray:
    """Exact log-probability of every catalogue item's semantic ID after ``prompt`` (small catalogues).

    One forward over the prompt, then the items' first ``L-1`` tokens in chunks that share the prompt's KV cache.
    ``vocab``: normalise each token over these ids only (as :func:`constrained_beam_search`).
    """
    device = next(model.parameters()).device
    vocab = vocab_tensor(vocab, device)
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    out = model(input_ids=ids, use_cache=True, **(prompt_inputs or {}))
    first = restricted_log_softmax(out.logits[0, -1], vocab)
    base_len = ids.shape[1]
    tokens = torch.tensor([index.token_ids(i) for i in range(index.n_items)], dtype=torch.long, device=device)
    total = first[tokens[:, 0]].clone()
    if index.levels == 1:
        return total.cpu().numpy()
    from transformers import DynamicCache

    cache_name = cache_kwarg(model)
    for start in range(0, index.n_items, chunk_size):
        chunk = tokens[start:start + chunk_size]
        m = chunk.shape[0]
        past = DynamicCache()
        for layer_idx, layer in enumerate(output_cache(out).layers):
            past.update(layer.keys.expand(m, -1, -1, -1), layer.values.expand(m, -1, -1, -1), layer_idx)
        pos = torch.arange(base_len, base_len + index.levels - 1, device=device).expand(m, -1)
        logits = model(input_ids=chunk[:, :-1], position_ids=pos, use_cache=True, **{cache_name: past}).logits
        logp = restricted_log_softmax(logits, vocab)
        gathered = logp.gather(-1, chunk[:, 1:].unsqueeze(-1)).squeeze(-1).sum(-1)
        total[start:start + m] += gathered
    return total.cpu().numpy()
