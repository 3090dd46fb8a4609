"""User-state tokens for generative recommendation: a frozen sequence encoder (SASRec) read by the LLM.

After every history item the encoder's causal state (which summarises items ``0..t`` only) is projected to the
LLM's hidden size and *added* to the input embedding of that item's last semantic-ID token: the position whose
output predicts the next item. Nothing is inserted, so prompts, labels and the KV-cache layout stay those of the
plain model, and the state at a position never sees a later item (no leak of the targets of one causal pass).
The projector's last layer starts at zero, so training starts from exactly the plain LLM.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from llmrec.errors import LlmrecError

PROJECTOR_FILE = "user_state_projector.safetensors"
ENCODER_DIR = "user_state_encoder"


class UserStateLM(nn.Module):
    """``llm`` (a PEFT model) + frozen ``encoder`` + trainable projector. ``slot_ids`` = the token-id range
    ``[lo, hi)`` of the last SID level; batches carry ``user_item_idx`` ``[B, T]`` (encoder indices of the
    prompt's items in prompt order, right-padded with 0), one per slot token of the row."""

    def __init__(self, llm, encoder, slot_ids: tuple[int, int]) -> None:
        super().__init__()
        self.llm = llm
        self.encoder = encoder
        self.slot_ids = (int(slot_ids[0]), int(slot_ids[1]))
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        d_out = llm.get_input_embeddings().weight.shape[1]
        d_in = encoder.config.d_model
        self.projector = nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))
        nn.init.zeros_(self.projector[-1].weight)
        nn.init.zeros_(self.projector[-1].bias)

    def train(self, mode: bool = True) -> UserStateLM:
        super().train(mode)
        self.encoder.eval()  # frozen: its dropout stays off, so the states are the ones decoding will see
        return self

    def embed(self, input_ids: torch.Tensor, user_item_idx: torch.Tensor) -> torch.Tensor:
        """Input embeddings with each slot token's row shifted by the projected encoder state of its item."""
        lo, hi = self.slot_ids
        slots = (input_ids >= lo) & (input_ids < hi)
        real = user_item_idx != 0
        n_slots, n_items = slots.sum(1), real.sum(1)
        if not torch.equal(n_slots, n_items):
            row = int(torch.nonzero(n_slots != n_items)[0, 0])
            raise LlmrecError(f"row {row}: {int(n_slots[row])} item slot token(s) in the prompt but "
                              f"{int(n_items[row])} items in user_item_idx; they must be the same items in order")
        embeds = self.llm.get_input_embeddings()(input_ids)
        if not n_items.any():
            return embeds
        with torch.no_grad():
            states = self.encoder(user_item_idx)
        shift = self.projector(states[real].float()).to(embeds.dtype)
        embeds = embeds.clone()
        embeds[slots] = embeds[slots] + shift
        return embeds

    def forward(self, input_ids=None, attention_mask=None, labels=None, user_item_idx=None, **kwargs):
        if user_item_idx is None:  # decoding steps after the prompt: plain token inputs
            return self.llm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        embeds = self.embed(input_ids, user_item_idx)
        return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    # ----------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path, **kwargs) -> None:
        """The PEFT adapter (as ``llm.save_pretrained``) plus the projector; the frozen encoder is saved once, with
        the model directory (:meth:`save_encoder`), not in every checkpoint."""
        from safetensors.torch import save_file

        self.llm.save_pretrained(path, **kwargs)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.projector.state_dict().items()}
        save_file(tensors, os.path.join(path, PROJECTOR_FILE))

    def save_encoder(self, path: str | Path) -> None:
        self.encoder.save(Path(path) / ENCODER_DIR)

    def load_projector(self, path: str | Path) -> None:
        """The projector written by :meth:`save_pretrained` into ``path`` (a checkpoint or a model directory)."""
        from safetensors.torch import load_file

        file = Path(path) / PROJECTOR_FILE
        if not file.is_file():
            raise LlmrecError(f"{path}: no {PROJECTOR_FILE} (not a checkpoint of a user-state model)")
        self.projector.load_state_dict(load_file(str(file)))

    def load_checkpoint(self, path: str | Path) -> None:
        """Adapter + projector from a :meth:`save_pretrained` directory (Trainer resume / best-model reload)."""
        self.load_projector(path)
        self.llm.load_adapter(str(path), self.llm.active_adapters[0], is_trainable=True)
