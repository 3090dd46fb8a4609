"""Causal-LM losses with logits only where a label is: the full-vocabulary loss of ``model(**batch).loss``
without its ``[rows, width, vocab]`` logits.

Hugging Face causal LMs build logits at every position and then keep the few that carry a target (a genrec
window's SID tokens, a QA row's answer). Here the model body gives the hidden states, the positions with a target
are gathered, and only they go through the LM head: the same loss and gradients, with the head's cost (about a fifth
of a 135M model's forward FLOPs at every position, plus the weight gradient PEFT's trainable rows make autograd
form) cut to the targets. The SID-vocabulary loss (:mod:`llmrec.lm.sid_vocab`) shares the body and the gathering.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_lm(model):
    """The Hugging Face causal LM inside ``model`` (a PEFT model, a UserStateLM around one, or a plain LM)."""
    inner = getattr(model, "llm", model)  # UserStateLM
    get_base = getattr(inner, "get_base_model", None)
    return get_base() if get_base is not None else inner


def hidden_states(model, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None = None,
                  position_ids: torch.Tensor | None = None, user_item_idx: torch.Tensor | None = None,
                  inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden states ``[B, T, d]`` from the model body (no LM head), of ``input_ids`` or ``inputs_embeds``;
    user-state models add their shifts."""
    body = causal_lm(model).get_decoder()
    if user_item_idx is not None:
        inputs_embeds = model.embed(input_ids, user_item_idx)
    tokens = {"input_ids": input_ids} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
    out = body(**tokens, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def target_states(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states ``[N, d]`` at the positions that carry a target (``labels`` shifted by one, -100 ignored) and
    their target tokens ``[N]``, in row-major position order."""
    hidden = hidden_states(model, batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
                           batch.get("user_item_idx"))
    return at_targets(hidden, batch["labels"])


def at_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``hidden`` ``[B, T, d]`` at the positions whose next label is a target, and those targets."""
    targets = labels[:, 1:]
    keep = targets != -100
    return hidden[:, :-1][keep], targets[keep]


def normalised_cross_entropy(logits: torch.Tensor, cls: torch.Tensor,
                             num_items_in_batch: int | torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Hugging Face's causal-LM normalisation: ``mean`` over targets, ``sum`` / ``num_items_in_batch`` when given,
    or ``none``; logits upcast to fp32 as its loss does."""
    logits = logits.float()
    if reduction == "none":
        return F.cross_entropy(logits, cls, reduction="none")
    if num_items_in_batch is not None:
        return F.cross_entropy(logits, cls, reduction="sum") / num_items_in_batch
    return F.cross_entropy(logits, cls)


def head_logits(model, h: torch.Tensor) -> torch.Tensor:
    """The LM head's full-vocabulary logits for hidden states ``h`` ``[n, d]``. Through PEFT's trainable tokens
    (tied to the embedding) the frozen matrix gives every column and the deltas replace their tokens' columns, so
    the backward reaches the deltas without the ``[vocab, d]`` weight gradient the wrapper's merged matrix costs."""
    head = causal_lm(model).get_output_embeddings()
    layer = getattr(head, "token_adapter", None)
    base = getattr(layer, "base_layer", None)
    if (layer is None or type(base) is not torch.nn.Linear or base.bias is not None or layer.disable_adapters
            or layer.merged or len(layer.active_adapters) != 1):
        return head(h)
    name = layer.active_adapters[0]
    logits = F.linear(h, base.weight)
    if name not in layer.trainable_tokens_delta:
        return logits
    trained = torch.tensor(layer.token_indices[name], dtype=torch.long, device=h.device)
    return logits.index_copy(1, trained, h @ layer.trainable_tokens_delta[name].to(h.dtype).T)


def full_vocab_loss(model, batch: dict[str, torch.Tensor], num_items_in_batch: int | torch.Tensor | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    """The causal-LM loss ``model(**batch).loss`` computes (full vocabulary, same normalisation as
    :func:`sid_vocab_loss`), with logits built only at the positions that carry a target: a genrec window's
    targets are its few SID tokens, so the ``[rows, width, vocab]`` logits (about a fifth of the forward's FLOPs
    and the head's weight gradient in backward) shrink to ``[targets, vocab]``."""
    hidden = hidden_states(model, batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
                           batch.get("user_item_idx"))
    return loss_at_targets(model, hidden, batch["labels"], num_items_in_batch, reduction)


def loss_at_targets(model, hidden: torch.Tensor, labels: torch.Tensor,
                    num_items_in_batch: int | torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """:func:`full_vocab_loss` from the body's hidden states ``[B, T, d]`` (for models that build their own
    input embeddings, e.g. soft prompts)."""
    h, t = at_targets(hidden, labels)
    return normalised_cross_entropy(head_logits(model, h), t, num_items_in_batch, reduction)
