"""Rows of an embedding matrix wrapped by peft's trainable tokens, read without rebuilding the whole matrix.

peft's ``TrainableTokensLayer`` (the trainable SID rows of every PersonalLM) looks tokens up in
``W.index_copy(0, trained, delta)``: a copy of the full ``[vocab, d]`` matrix per forward and, in backward, a dense
``[vocab, d]`` gradient of it (zero-filled, then gathered back to the delta). For SmolLM2-135M's 49k-token vocabulary
that was ~8 % of a genrec training step on one core (torch profiler: ``fill_`` and ``copy_`` of ``[49921, 576]``) to
update a few hundred rows. :func:`merged_rows` reads the frozen rows for the tokens asked and puts the delta's rows in
where a token is trained: the same values and the same gradient for the delta, at the cost of the lookup itself.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def merged_rows(layer, token_ids: torch.Tensor) -> torch.Tensor:
    """Rows ``[n, d]`` of peft trainable-tokens ``layer``'s matrix for 1-D ``token_ids`` as its forward would use them:
    the active adapters' deltas in place of the frozen rows (differentiable w.r.t. the deltas)."""
    base = layer.base_layer.weight
    rows = base.index_select(0, token_ids)
    if layer.disable_adapters or layer.merged or not layer.active_adapters:
        return rows
    for name in layer.active_adapters:
        trained = torch.tensor(layer.token_indices[name], dtype=torch.long, device=base.device)
        lookup = torch.full((base.shape[0],), -1, dtype=torch.long, device=base.device)
        lookup[trained] = torch.arange(len(trained), device=base.device)
        where = lookup[token_ids]
        hit = where >= 0
        if hit.any():
            delta = layer.trainable_tokens_delta[name].to(rows.dtype)
            rows = rows.clone()
            rows[hit] = delta[where[hit]]
    return rows


@functools.cache  # one class, so that a module's type says whether it was switched
def _row_lookup_class():
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    class RowLookupTrainableTokens(TrainableTokensLayer):
        """peft's trainable-tokens embedding, looked up through :func:`merged_rows`; any case it does not cover
        (merged or disabled adapters, several adapters, an embedding with max_norm / sparse / scaled gradients or
        scale, a trained padding token) goes through peft's own forward."""

        def forward_adapters(self, x: torch.Tensor, active_adapters, *args, **kwargs) -> torch.Tensor:
            base = self.base_layer
            names = list(active_adapters)
            if (args or kwargs or self.disable_adapters or self.merged or len(names) != 1
                    or type(base) is not nn.Embedding or base.max_norm is not None or base.sparse
                    or base.scale_grad_by_freq or self._get_embed_scale() is not None
                    or (base.padding_idx is not None and base.padding_idx in self.token_indices.get(names[0], ()))):
                return super().forward_adapters(x, active_adapters, *args, **kwargs)
            return merged_rows(self, x.reshape(-1)).view(*x.shape, -1)

    return RowLookupTrainableTokens


def use_row_lookup_embeddings(model: nn.Module, *, undo: bool = False) -> int:
    """Switch ``model``'s peft trainable-tokens embeddings (not a tied LM head: that one needs every row) to the row
    lookup; returns how many. No parameters change; ``undo=True`` restores peft's class."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    fast = _row_lookup_class()
    changed = 0
    for module in model.modules():
        if not isinstance(module, TrainableTokensLayer) or type(module.base_layer) is not nn.Embedding:
            continue
        if type(module) is not (fast if undo else TrainableTokensLayer):
            continue  # already switched, or a subclass of peft's that is not ours
        module.__class__ = TrainableTokensLayer if undo else fast
        changed += 1
    return changed

