"""Soft prompts: a user encoder + projector whose k output vectors replace the placeholder tokens' embeddings.

The prompt template writes ``<|user|>`` k times where the user goes; :class:`SoftPromptModel` swaps those
positions' input embeddings for the projected user vectors, in training (``forward``) and in generation
(left-padded batches through ``generate(inputs_embeds=...)``, so the KV cache works as usual).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from llmrec.config import Config
from llmrec.errors import ConfigError, LlmrecError
from llmrec.users.projector import Projector, VocabProjector

USER_TOKEN = "<|user|>"


@dataclasses.dataclass
class SoftPromptConfig(Config):
    encoder: str = "sequence"  # sequence (SASRec-style states) | pool (input-aware attention, PPlug)
    k: int = 1  # soft tokens per user
    train_llm: bool = False  # False: encoder + projector only, LLM frozen (alignment stage); True: + LoRA
    train_encoder: bool = True
    max_items: int = 50  # most recent history items the encoder sees
    # mlp: free vectors (2-layer MLP, normalised, learned scale); vocab: mixtures of the LLM's embeddings of
    # ``anchor_ids`` (e.g. the tokens of the catalogue's titles and categories), see users.projector.VocabProjector
    projector: str = "mlp"
    anchor_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ConfigError(f"max_items must be >= 1, got {self.max_items}")
        if self.projector not in ("mlp", "vocab"):
            raise ConfigError(f"projector must be mlp or vocab, got {self.projector!r}")
        if self.projector == "vocab" and not self.anchor_ids:
            raise ConfigError("projector='vocab' needs anchor_ids (token ids whose embeddings the soft tokens mix)")
        if self.encoder not in ("sequence", "pool"):
            raise ConfigError(f"encoder must be sequence or pool, got {self.encoder!r}")
        if not 1 <= self.k <= 32:
            raise ConfigError(f"k must be in 1..32, got {self.k}")


class SequenceUserEncoder(nn.Module):
    """Adapter giving :class:`~llmrec.users.sequence.SequenceEncoder` the user-encoder call signature."""

    def __init__(self, encoder, k: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.k = k
        self.output_dim = encoder.config.d_model

    def forward(self, item_idx: torch.Tensor, query_vec: torch.Tensor | None = None,
                ratings: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder.user_states(item_idx, ratings, k=self.k)


def add_user_token(tokenizer, model) -> int:
    """Add the ``<|user|>`` placeholder (a special token, never split) and return its id."""
    if USER_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [USER_TOKEN]})
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return int(tokenizer.convert_tokens_to_ids(USER_TOKEN))


class SoftPromptModel(nn.Module):
    """LLM (plain or PEFT) + user encoder + projector. Batches carry ``user_item_idx`` ([B,T], 0 = pad) and
    optionally ``user_ratings`` and ``user_query_vec`` next to ``input_ids``/``attention_mask``/``labels``."""

    # With labels, the forward returns the loss of the model's own (mean over answer tokens) from logits at the
    # answer positions only (llmrec.lm.target_loss); False: the LLM's forward with logits everywhere (benchmarks).
    logits_at_targets_only: bool = True

    def __init__(self, llm, user_encoder: nn.Module, user_token_id: int, config: SoftPromptConfig) -> None:
        super().__init__()
        self.llm = llm
        self.user_encoder = user_encoder
        self.config = config
        self.user_token_id = user_token_id
        emb = llm.get_input_embeddings().weight
        hidden = emb.shape[1]
        init_norm = float(emb[: user_token_id].detach().float().norm(dim=-1).mean())
        if config.projector == "vocab":
            if max(config.anchor_ids) >= emb.shape[0] or min(config.anchor_ids) < 0:
                raise ConfigError(f"anchor_ids must be token ids below the vocabulary size {emb.shape[0]}")
            self.projector = VocabProjector(user_encoder.output_dim, llm.get_input_embeddings(),
                                            list(config.anchor_ids))
        else:
            self.projector = Projector(user_encoder.output_dim, hidden, init_norm)
        if not config.train_llm:
            for p in self.llm.parameters():
                p.requires_grad_(False)
        if not config.train_encoder:
            for p in self.user_encoder.parameters():
                p.requires_grad_(False)

    def freeze_user_modules(self) -> None:
        """Stop training the encoder and projector (e.g. once text-aligned, so LoRA learns to read them as they
        are: trained on during QA they drift back to uninformative tokens)."""
        for p in list(self.user_encoder.parameters()) + list(self.projector.parameters()):
            p.requires_grad_(False)

    def user_vectors(self, user_item_idx: torch.Tensor, user_query_vec: torch.Tensor | None = None,
                     user_ratings: torch.Tensor | None = None) -> torch.Tensor:
        states = self.user_encoder(user_item_idx, query_vec=user_query_vec, ratings=user_ratings)
        return self.projector(states.float())

    def splice(self, input_ids: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Input embeddings with each row's k placeholder positions replaced by that row's k user vectors."""
        embeds = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.user_token_id
        per_row = slots.sum(1)
        k = vectors.shape[1]
        if not torch.all(per_row == k):
            bad = int(torch.nonzero(per_row != k)[0, 0])
            raise LlmrecError(
                f"row {bad} has {int(per_row[bad])} {USER_TOKEN} placeholder(s), expected {k}: the prompt template "
                f"must put the user placeholder (k copies of {USER_TOKEN}) where the user goes"
            )
        embeds = embeds.clone()
        embeds[slots] = vectors.reshape(-1, vectors.shape[-1]).to(embeds.dtype)
        return embeds

    def forward(self, input_ids, attention_mask=None, labels=None, user_item_idx=None, user_ratings=None,
                user_query_vec=None, **kwargs):
        if user_item_idx is None:
            raise LlmrecError("a soft-prompt batch needs user_item_idx")
        vectors = self.user_vectors(user_item_idx, user_query_vec, user_ratings)
        embeds = self.splice(input_ids, vectors)
        # the Trainer's token count over all accumulated micro-batches (it passes it: this forward takes **kwargs);
        # the loss is then sum / count as Hugging Face's, so accumulation averages over tokens, not micro-batches
        items = kwargs.get("num_items_in_batch")
        if labels is None or not self.logits_at_targets_only:
            loss_kwargs = {} if items is None else {"num_items_in_batch": items}
            return self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **loss_kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        from llmrec.lm.target_loss import hidden_states, loss_at_targets

        hidden = hidden_states(self.llm, None, attention_mask, inputs_embeds=embeds)
        # the loss only: no per-position logits were built
        return CausalLMOutputWithPast(loss=loss_at_targets(self.llm, hidden, labels, items))

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, user_item_idx, user_ratings=None, user_query_vec=None,
                 max_new_tokens: int = 16, pad_token_id: int | None = None, eos_token_id=None) -> torch.Tensor:
        """Greedy continuation of left-padded prompts; returns only the new tokens ``[B, n]``."""
        vectors = self.user_vectors(user_item_idx, user_query_vec, user_ratings)
        embeds = self.splice(input_ids, vectors)
        return self.llm.generate(
            inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=1, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
            temperature=None, top_p=None, top_k=None,
        )

    # ---------------------------------------------------------------------------------------- persistence
    def save_user_modules(self, path: str | Path) -> None:
        """Encoder + projector weights (safetensors) and the soft-prompt config beside them."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"user_encoder.{k}": v.detach().contiguous() for k, v in self.user_encoder.state_dict().items()}
        tensors |= {f"projector.{k}": v.detach().contiguous() for k, v in self.projector.state_dict().items()}
        save_file(tensors, str(path / "user_modules.safetensors"))
        self.config.save(path / "soft_prompt_config.json")

    def load_user_modules(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        file = Path(path) / "user_modules.safetensors"
        if not file.is_file():
            raise LlmrecError(f"{path}: no user_modules.safetensors (not a saved soft-prompt user model)")
        tensors = load_file(str(file))
        enc = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("user_encoder.")}
        proj = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("projector.")}
        self.user_encoder.load_state_dict(enc)
        self.projector.load_state_dict(proj)


# -------------------------------------------------------------------------------- encoder persistence
ENCODER_FILE = "user_encoder.json"


def save_user_model(model: SoftPromptModel, path: str | Path, item_ids: list[str]) -> None:
    """Everything needed to rebuild ``model``'s user side over a given LLM: the encoder's architecture
    (``user_encoder.json``, with the catalogue order its item indices refer to), weights and config."""
    from llmrec.io import write_json_atomic

    enc = model.user_encoder
    if isinstance(enc, SequenceUserEncoder):
        spec = {"kind": "sequence", "k": enc.k, "config": enc.encoder.config.to_dict()}
    else:
        spec = {"kind": "pool", "config": enc.config.to_dict(), "n_items": int(enc.item_vectors.shape[0] - 1)}
    spec["item_ids"] = list(item_ids)
    model.save_user_modules(path)
    write_json_atomic(Path(path) / ENCODER_FILE, spec)


def load_user_model(llm, tokenizer, path: str | Path) -> tuple[SoftPromptModel, list[str]]:
    """Rebuild a :class:`SoftPromptModel` around ``llm`` from :func:`save_user_model`'s folder; returns it and the
    catalogue order of its item indices (index i + 1 = ``item_ids[i]``)."""
    import json

    from llmrec.users.attention_pool import AttentionPoolConfig, AttentionPoolEncoder
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    path = Path(path)
    spec_file = path / ENCODER_FILE
    if not spec_file.is_file():
        raise LlmrecError(f"{path}: no {ENCODER_FILE} (not a saved soft-prompt user model)")
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    missing = [k for k in ("kind", "config", "item_ids") if not isinstance(spec, dict) or k not in spec]
    if missing or not isinstance(spec["item_ids"], list):
        raise ConfigError(f"{spec_file}: expected an object with kind, config and an item_ids list (missing "
                          f"{missing or ['item_ids list']}); save the model again")
    item_ids = [str(i) for i in spec["item_ids"]]
    if spec["kind"] == "sequence":
        enc_cfg = SequenceEncoderConfig.from_dict(spec["config"])
        encoder: nn.Module = SequenceUserEncoder(SequenceEncoder(enc_cfg, item_ids), int(spec["k"]))
    elif spec["kind"] == "pool":
        pool_cfg = AttentionPoolConfig.from_dict(spec["config"])
        encoder = AttentionPoolEncoder(pool_cfg, torch.zeros(int(spec["n_items"]), pool_cfg.item_dim))
    else:
        raise LlmrecError(f"{spec_file}: unknown user encoder kind {spec['kind']!r}")
    if USER_TOKEN not in tokenizer.get_vocab():
        raise LlmrecError(f"{path}: the tokenizer has no {USER_TOKEN} token; save the tokenizer with the model")
    config = SoftPromptConfig.load(path / "soft_prompt_config.json")
    model = SoftPromptModel(llm, encoder, int(tokenizer.convert_tokens_to_ids(USER_TOKEN)), config)
    model.load_user_modules(path)
    model.eval()
    return model, item_ids


# ------------------------------------------------------------------------------------------------ builder
def build_soft_prompt_lm(encoder, k: int, *, base_model: str = "smollm2-135m", adapter: str | None = "lora",
                         max_items: int = 50, projector: str = "mlp", anchor_texts: Sequence[str] = (),
                         dtype: str = "auto"):
    """Load ``base_model``, add ``<|user|>``, wrap it in the LoRA ``adapter`` preset (None = frozen LLM, the
    alignment-stage mode) and put a :class:`SoftPromptModel` with ``k`` tokens from ``encoder`` (a
    :class:`~llmrec.users.sequence.SequenceEncoder`, used as is) on top -> ``(model, tokenizer, llm)``.
    ``projector="vocab"`` mixes the embeddings of the tokens of ``anchor_texts`` (e.g. every item's text)."""
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import with_lora

    llm, tok = load_causal_lm(base_model, dtype=dtype)
    uid = add_user_token(tok, llm)
    if adapter:
        llm = with_lora(llm, adapter)
    anchors = tuple(sorted({t for ids in text_token_ids(tok, anchor_texts) for t in ids}))
    config = SoftPromptConfig(encoder="sequence", k=k, train_llm=bool(adapter), max_items=max_items,
                              projector=projector, anchor_ids=anchors)
    return SoftPromptModel(llm, SequenceUserEncoder(encoder, k), uid, config), tok, llm


def text_token_ids(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as it reads inside a prompt (after a space): the vocab projector's anchors and the
    text-alignment targets (:mod:`llmrec.training.text_align`) use this one tokenization."""
    return [tokenizer(" " + t, add_special_tokens=False)["input_ids"] for t in texts]
