"""Next-token distributions over the semantic-ID vocabulary only (genrec ``loss: sid``).

Genrec targets are SID tokens, so training can score the hidden state at each target position against the
(tied) output rows of the SID tokens alone: no ``[tokens, vocab]`` logits are built. The model body (the
decoder under the LM head, LoRA and trainable SID rows included) gives the hidden states; the output rows are
read through PEFT's trainable-tokens layer so their gradient reaches the trainable delta. Decoding a model
trained this way normalises each step over the same rows (:func:`restricted_log_softmax`), so a beam's score is
the training log-likelihood of its ID.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from llmrec.errors import LlmrecError
from llmrec.lm.target_loss import causal_lm, normalised_cross_entropy, target_states
from llmrec.lm.trainable_rows import merged_rows

GENREC_LOSSES = ("full", "sid")


def output_rows(model, token_ids: torch.Tensor) -> torch.Tensor:
    """The LM head's rows for ``token_ids`` ``[n, d]`` as the forward would use them: PEFT's trainable-token
    deltas in place of the frozen rows (differentiable w.r.t. the delta), or the plain weight."""
    head = causal_lm(model).get_output_embeddings()
    layer = getattr(head, "token_adapter", None)  # peft TrainableTokensWrapper (e.g. tied to the embedding)
    if layer is None:
        if getattr(head, "bias", None) is not None:
            raise LlmrecError("the SID-vocabulary loss supports LM heads without bias only")
        return head.weight.index_select(0, token_ids)
    return merged_rows(layer, token_ids)


def sid_vocab_loss(model, batch: dict[str, torch.Tensor], vocab: torch.Tensor,
                   num_items_in_batch: int | torch.Tensor | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of each target (``labels`` shifted by one, -100 ignored) under a softmax over the ``vocab``
    token rows only. ``reduction``: ``mean`` over targets, ``sum`` divided by ``num_items_in_batch`` when given
    (the Trainer's token-count normalisation, as Hugging Face causal LMs do), or ``none`` (one loss per target,
    in row-major position order)."""
    h, t = target_states(model, batch)
    lookup = torch.full((int(vocab.max()) + 1,), -1, dtype=torch.long, device=t.device)
    lookup[vocab] = torch.arange(len(vocab), device=t.device)
    cls = torch.where(t < len(lookup), lookup[t.clamp(max=len(lookup) - 1)], torch.full_like(t, -1))
    if (cls < 0).any():
        bad = int(t[cls < 0][0])
        raise LlmrecError(f"target token {bad} is not a semantic-ID token: loss 'sid' scores SID targets only "
                          "(title alignment rows need loss 'full')")
    return normalised_cross_entropy(h @ output_rows(model, vocab).to(h.dtype).T, cls, num_items_in_batch, reduction)


def restricted_log_softmax(logits: torch.Tensor, vocab: torch.Tensor | None) -> torch.Tensor:
    """``log_softmax`` over the last dim in fp32, or over the ``vocab`` columns only (others -inf) when given. The
    upcast happens inside the fused kernel as it reads (no fp32 copy of ``[rows, vocab]`` logits first)."""
    if vocab is None:
        return F.log_softmax(logits, dim=-1, dtype=torch.float32)
    out = torch.full(logits.shape, -torch.inf, dtype=torch.float32, device=logits.device)
    out[..., vocab] = F.log_softmax(logits[..., vocab], dim=-1, dtype=torch.float32)
    return out


def column_log_softmax(logits: torch.Tensor, vocab: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
    """``restricted_log_softmax(logits, vocab)[..., lo:hi]``: the SID token columns beam search reads, the only
    ones that go on to NumPy (the old full ``[rows, vocab]`` copy was ~5 % of a batched search)."""
    return restricted_log_softmax(logits, vocab)[..., lo:hi]


def vocab_tensor(token_ids: Sequence[int] | None, device) -> torch.Tensor | None:
    return None if token_ids is None else torch.as_tensor(list(token_ids), dtype=torch.long, device=device)
