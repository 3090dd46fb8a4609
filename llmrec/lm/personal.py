"""PersonalLM: a causal LM + semantic-ID vocabulary + PEFT adapter, with constrained recommendation.

Saved as one directory that plain transformers + peft can open (``adapter_model.safetensors``,
``adapter_config.json``, tokenizer with the SID tokens) plus llmrec's own pieces (``llmrec_config.json``,
``sids/`` the semantic-ID table, ``catalogue.json`` item titles, and ``user/`` the soft-prompt user encoder +
projector when the model answers from soft prompts, ``user_state_encoder/`` + ``user_state_projector.safetensors``
when it recommends from a sequence encoder's states too, see :mod:`llmrec.lm.user_states`), and ``model.json`` +
``data_config.json``: the dtype and the dataset it was trained on (the full layout: :mod:`llmrec.lm.model_dir`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from llmrec.config import Config
from llmrec.data.schema import Vocabulary
from llmrec.errors import ConfigError, LlmrecError
from llmrec.hardware import normalize_dtype, resolve_dtype
from llmrec.io import atomic_dir, write_json_atomic
from llmrec.lm.decoding import PrefixIndex, constrained_beam_search, score_all_items
from llmrec.lm.loading import load_causal_lm
from llmrec.lm.merged import DecodingCopy
from llmrec.nouns import prompt_vocab
from llmrec.package_data import adapters_dir
from llmrec.prompting import chat_ids, render
from llmrec.tasks.uqa import item_title

logger = logging.getLogger(__name__)

PROFILE_PREFIX = "This user"  # start of a grounded profile (see PersonalLM.profile)
LORA_KEYS = {"r", "lora_alpha", "lora_dropout", "target_modules", "load_in_4bit", "bias"}


SID_INITS = ("projection", "centred", "mean", "random")
PROJECTED_SID_INITS = ("projection", "centred")  # the inits that read item text vectors


@dataclasses.dataclass
class PersonalLMConfig(Config):
    base_model: str = "smollm2-135m"
    dtype: str = "auto"  # auto: resolved for the machine at hand; a saved model records the dtype it used
    adapter: str = "lora"  # preset name in adapters/ or a YAML path
    sid_init: str = "centred"  # centred | projection (text vectors -> LLM space, nearly parallel rows) | mean | random
    prompt: str = "genrec"
    max_history: int = 50  # items of history in a prompt
    seed: int = 0
    # The dataset's nouns for the prompt (Vocabulary fields: item, items, interacted, category, categories);
    # None = the generic "items" / "interacted with". Set by PersonalLM.create(vocabulary=data.vocabulary).
    vocabulary: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.dtype = normalize_dtype(self.dtype)
        if self.sid_init not in SID_INITS:
            raise ConfigError(f"sid_init must be one of {', '.join(SID_INITS)}, got {self.sid_init!r}")
        if self.max_history < 1:
            raise ConfigError("max_history must be >= 1")
        if self.vocabulary is not None:
            known = {f.name for f in dataclasses.fields(Vocabulary)}
            if not isinstance(self.vocabulary, dict) or set(self.vocabulary) - known:
                raise ConfigError(f"vocabulary must map some of {sorted(known)} to words, got {self.vocabulary!r}")


def load_adapter_preset(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.is_file():
        path = adapters_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in adapters_dir().glob("*.yaml"))
        raise ConfigError(f"adapter preset {name_or_path!r} not found; presets: {presets}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - LORA_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(LORA_KEYS)}")
    return data


def lora_config(preset: dict[str, Any], **extra: Any):
    """A peft ``LoraConfig`` for a causal LM from an ``adapters/*.yaml`` preset (see :func:`load_adapter_preset`)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=int(preset.get("r", 16)),
        lora_alpha=int(preset.get("lora_alpha", 32)),
        lora_dropout=float(preset.get("lora_dropout", 0.05)),
        target_modules=preset.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"]),
        bias=preset.get("bias", "none"),
        **extra,
    )


def with_lora(model, adapter: str | dict[str, Any] = "lora", **extra: Any):
    """``model`` wrapped in PEFT LoRA from an ``adapters/`` preset (a name, a YAML path or a loaded preset)."""
    from peft import get_peft_model

    preset = adapter if isinstance(adapter, dict) else load_adapter_preset(adapter)
    peft_model = get_peft_model(model, lora_config(preset, **extra))
    _fast_adapters(peft_model)
    return peft_model


def _fast_adapters(peft_model) -> None:
    """The CPU-cheap forms of LoRA's dropout and mixed precision and of the trainable rows' lookup; same parameters
    and saved files (see :func:`~llmrec.users.fast_dropout.use_bit_dropout`,
    :func:`~llmrec.lm.lora_compute.use_compute_dtype_lora`, :func:`~llmrec.lm.trainable_rows.use_row_lookup_embeddings`)."""
    from llmrec.lm.lora_compute import use_compute_dtype_lora
    from llmrec.lm.trainable_rows import use_row_lookup_embeddings
    from llmrec.users.fast_dropout import use_bit_dropout

    use_bit_dropout(peft_model)
    use_compute_dtype_lora(peft_model)
    use_row_lookup_embeddings(peft_model)


def _model_dtype(model) -> str:
    """``bf16``/``fp16``/``fp32`` of a loaded model's floating-point weights (``auto`` when it has none)."""
    names = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}
    for p in model.parameters():
        if p.is_floating_point():
            return names.get(str(p.dtype), "auto")
    return "auto"


class PersonalLM:
    """Use :meth:`create` for a new model and :meth:`load` for a saved one."""

    def __init__(self, model, tokenizer, sids, titles: dict[str, str], config: PersonalLMConfig, *,
                 soft=None, soft_item_ids: Sequence[str] | None = None) -> None:
        """``soft``: a :class:`~llmrec.lm.soft_prompt.SoftPromptModel` around ``model`` whose encoder indexes
        ``soft_item_ids`` (index i + 1 = ``soft_item_ids[i]``); :meth:`answer` then reads the user from it."""
        if soft is not None and (soft.llm is not model or soft_item_ids is None):
            raise LlmrecError("a soft-prompt user model must wrap this PersonalLM's model and come with its item ids")
        self.soft = soft
        self.soft_item_ids = list(soft_item_ids or [])
        self.soft_index = {item: i + 1 for i, item in enumerate(self.soft_item_ids)}
        self.model = model
        self.tokenizer = tokenizer
        self.sids = sids
        self.titles = titles
        if config.dtype == "auto":  # built around a loaded model: record what it runs in (saved with it)
            config = dataclasses.replace(config, dtype=_model_dtype(model))
        self.config = config
        self.item_ids: list[str] = list(sids.item_ids) if sids is not None else list(titles)
        self.item_row = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.index = None
        self.user_states = None  # UserStateLM around ``model`` when recommending from SASRec states too
        self.dataset: dict[str, Any] | None = None  # how to reload the training data (model_dir.dataset_record)
        self._decoding_copy = DecodingCopy()
        self.merge_lora_for_decoding = True  # False: decode the PEFT model itself (saves one copy of the weights)
        # "sid": trained with the SID-vocabulary loss, so decoding normalises over the SID tokens too (model.json)
        self.genrec_loss = "full"
        if sids is not None:
            self._index_sids(sids)

    def _index_sids(self, sids) -> None:
        tokenizer = self.tokenizer
        tokens = sids.token_strings()
        ids = tokenizer.convert_tokens_to_ids(tokens)
        self.sid_token_ids = ids
        self.first_sid_id = int(min(ids))
        offsets, start = [], 0
        for size in sids.codebook_sizes:
            offsets.append(int(ids[start]))
            if list(ids[start:start + size]) != list(range(ids[start], ids[start] + size)):
                raise LlmrecError("SID tokens of one level must have contiguous token ids")
            start += size
        # A level with a single code (e.g. a disambiguation level that found no collision) carries no
        # information: it is left out of prompts and decoding, which saves one token per item.
        self.levels = [lv for lv, size in enumerate(sids.codebook_sizes) if size > 1] or [0]
        # The tokens a prompt or a recommendation can hold: the SID vocabulary of loss "sid" (llmrec.lm.sid_vocab)
        self.sid_vocab = [offsets[lv] + c for lv in self.levels for c in range(sids.codebook_sizes[lv])]
        self.index = PrefixIndex(np.asarray(sids.codes)[:, self.levels], [offsets[lv] for lv in self.levels])

    def attach_user_states(self, encoder) -> None:
        """Feed a trained :class:`~llmrec.users.sequence.SequenceEncoder`'s state after each history item into
        the LLM (see :mod:`llmrec.lm.user_states`); recommendation and training then go through it."""
        from llmrec.lm.user_states import UserStateLM

        self._need_sids()
        if encoder.item_ids is None or set(encoder.item_ids) != set(self.item_ids):
            raise LlmrecError("the user-state encoder must be built over this model's catalogue (same item ids)")
        if encoder.config.max_len < self.config.max_history:
            raise LlmrecError(f"the user-state encoder reads {encoder.config.max_len} items but prompts hold up to "
                              f"max_history={self.config.max_history}")
        last = self.levels[-1]
        lo = self.index.level_offsets[-1]
        self.user_states = UserStateLM(self.model, encoder, (lo, lo + self.sids.codebook_sizes[last]))

    @property
    def trainable_model(self):
        """The module training and decoding run: the user-state wrapper when attached, else the PEFT model."""
        return self.user_states if self.user_states is not None else self.model

    def decoding_model(self):
        """The module beam search and exact scoring run, in eval mode: a LoRA-merged copy of the PEFT model on CPU,
        rebuilt when the adapter changes (:mod:`llmrec.lm.merged`); the model itself with user states or on GPU."""
        model = self.trainable_model
        if self.user_states is not None or not self.merge_lora_for_decoding:
            self._decoding_copy.clear()
            return model.eval()
        decoding = self._decoding_copy.get(model)
        # the merged copy is built in eval mode; switching the whole PEFT model's ~1,600 modules costs ~20 ms a
        # call, a tenth of a single user's search, so only the model itself is switched when it decodes
        return decoding if decoding is not model else model.eval()

    def prompt_items(self, history: Sequence[str]) -> list[str]:
        """The history items a prompt shows (the last ``max_history``), oldest first."""
        return list(history)[-self.config.max_history:]

    @property
    def decode_vocab(self) -> list[int] | None:
        """Token ids recommendation normalises each step over: the SID vocabulary when trained with loss
        ``sid``, else None (the whole vocabulary), so search scores are the training log-likelihoods."""
        return self.sid_vocab if self.genrec_loss == "sid" else None

    def user_state_inputs(self, windows: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        """``{"user_item_idx": [B, T]}`` for prompts of these item windows (empty without user states)."""
        if self.user_states is None:
            return {}
        idx, _ = self.user_states.encoder.encode_histories(windows)  # windows fit: attach checked max_len
        return {"user_item_idx": idx.to(next(self.model.parameters()).device)}

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def create(
        cls,
        sids,
        catalogue: dict[str, Any],
        config: PersonalLMConfig | None = None,
        *,
        item_vectors: np.ndarray | None = None,
        trust_remote_code: bool = False,
        vocabulary: Vocabulary | None = None,
    ) -> PersonalLM:
        """Load the base LM, add the SID vocabulary, initialise its rows and wrap the model in PEFT.

        ``catalogue`` maps item id -> ``Item``; ``item_vectors`` (rows in ``sids.item_ids`` order) are the text
        vectors the SIDs were built from; they drive the ``projection`` initialisation. ``vocabulary``
        (``data.vocabulary``): the dataset's nouns for the prompt, saved with the model.
        """
        config = config or PersonalLMConfig()
        if vocabulary is not None:
            config.vocabulary = dataclasses.asdict(vocabulary)
        torch.manual_seed(config.seed)
        preset = load_adapter_preset(config.adapter)
        config.dtype = resolve_dtype(config.dtype)  # saved with the model: the dtype actually used, not "auto"
        model, tok = load_causal_lm(
            config.base_model, dtype=config.dtype, load_in_4bit=bool(preset.get("load_in_4bit")),
            trust_remote_code=trust_remote_code,
        )
        tokens = sids.token_strings()
        vocab = tok.get_vocab()  # once: each call builds the whole 49k-entry dict (0.1-0.6 s), not per SID token
        clash = [t for t in tokens if t in vocab]
        if clash:
            raise LlmrecError(f"SID tokens already exist in the base vocabulary, e.g. {clash[0]!r}")
        old_vocab = len(tok)
        tok.add_tokens(tokens)
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        new_ids = list(range(old_vocab, len(tok)))
        titles = {i: item_title(catalogue[i]) for i in sids.item_ids}
        init_sid_embeddings(model, tok, sids, titles, new_ids, config.sid_init, item_vectors, config.seed)
        # Only the new SID rows train; the embedding stays tied to the LM head.
        peft_model = with_lora(model, preset, trainable_token_indices={"embed_tokens": new_ids})
        return cls(peft_model, tok, sids, titles, config)

    @classmethod
    def from_base(cls, base_model: str = "smollm2-135m", catalogue: dict[str, Any] | None = None, *,
                  dtype: str = "auto", trust_remote_code: bool = False,
                  vocabulary: Vocabulary | None = None) -> PersonalLM:
        """A PersonalLM over a plain causal LM (no semantic IDs, no adapter): answer / profile / generate only."""
        dtype = resolve_dtype(dtype)
        model, tok = load_causal_lm(base_model, dtype=dtype, trust_remote_code=trust_remote_code)
        titles = {i: item_title(it) for i, it in (catalogue or {}).items()}
        nouns = dataclasses.asdict(vocabulary) if vocabulary is not None else None
        return cls(model, tok, None, titles, PersonalLMConfig(base_model=base_model, dtype=dtype, vocabulary=nouns))

    @property
    def vocabulary(self) -> Vocabulary:
        """The nouns this model's prompts speak (see :class:`PersonalLMConfig`)."""
        return Vocabulary(**(self.config.vocabulary or {}))

    # ----------------------------------------------------------------------------------- text generation
    @torch.no_grad()
    def generate(self, prompt: str, *, max_new_tokens: int = 64, use_adapter: bool = True,
                 answer_prefix: str = "") -> str:
        """Greedy reply to one user turn (chat template when the tokenizer has one). ``answer_prefix`` is written
        as the start of the reply (and returned with it): it keeps small models from echoing the prompt."""
        prefix_ids = self.tokenizer(answer_prefix, add_special_tokens=False)["input_ids"] if answer_prefix else []
        ids = torch.tensor([chat_ids(self.tokenizer, prompt) + prefix_ids],
                           device=next(self.model.parameters()).device)
        self.model.eval()
        disable = getattr(self.model, "disable_adapter", None)
        ctx = disable() if (not use_adapter and disable is not None) else nullcontext()
        # Prose never contains semantic-ID tokens: their tied rows would otherwise compete with words.
        suppress = list(self.sid_token_ids) if self.index is not None else None
        with ctx:
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      num_beams=1, max_new_tokens=max_new_tokens, suppress_tokens=suppress,
                                      pad_token_id=self.tokenizer.pad_token_id, temperature=None, top_p=None,
                                      top_k=None)
        reply = self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        return (answer_prefix + reply).strip()

    def answer(self, history, question: str, data, *, max_items: int = 20, max_new_tokens: int = 48,
               use_adapter: bool = False, soft: bool | None = None, options: Sequence[str] = (),
               answer_kind: str | None = None) -> str:
        """Answer a question about the user whose ``history`` (a UserHistory) is given as text, or, with
        ``soft`` (the default when the model has a soft-prompt user encoder), as k soft-prompt vectors.

        ``options`` / ``answer_kind`` ask in the format a soft-prompt model was trained on (e.g. ``("yes", "no")``,
        or the worked form of :data:`llmrec.tasks.uqa.WORKED_KIND`); the free-text prompt takes neither.
        The genrec adapter is trained for semantic IDs, not prose, so it is off by default for text answers.
        """
        from llmrec.tasks.profile import history_lines

        if soft or (soft is None and self.soft is not None):
            return self.soft_answer(history, question, max_new_tokens=max_new_tokens, options=options,
                                    answer_kind=answer_kind)
        if options or answer_kind:
            raise ConfigError("options / answer_kind shape a soft-prompt model's answer; this answer reads the "
                              "history as text (a model without a user/ folder, or soft=False)")

        lines = history_lines(history, data, max_items=max_items)
        return self.generate(render("answer", history=lines, question=question, vocab=prompt_vocab(data.vocabulary)),
                             max_new_tokens=max_new_tokens, use_adapter=use_adapter)

    def profile(self, history, data, *, max_items: int = 20, max_new_tokens: int = 96,
                use_adapter: bool = False, grounded: bool = True) -> str:
        """A short natural-language profile of the user from their history (``prompts/profile_write.jinja``).

        ``grounded`` (default) also gives the writer the facts computed from the whole history (top categories,
        average rating, decade: :func:`~llmrec.tasks.profile.template_profile`) and starts the reply with
        "This user", so a small model summarises instead of copying the item list.
        """
        from llmrec.tasks.profile import profile_write_prompt

        return self.generate(profile_write_prompt(history, data, max_items=max_items, grounded=grounded),
                             max_new_tokens=max_new_tokens, use_adapter=use_adapter,
                             answer_prefix=PROFILE_PREFIX if grounded else "")

    @torch.no_grad()
    def soft_answer(self, history, question: str, *, max_new_tokens: int = 48,
                    options: Sequence[str] = (), answer_kind: str | None = None) -> str:
        """Greedy answer from ``prompts/uqa_soft.jinja`` with the user as k soft tokens (no history text);
        ``options``/``answer_kind`` fill the template as in training (e.g. the category list, ``"genre"``)."""
        from llmrec.lm.soft_prompt import USER_TOKEN

        if self.soft is None:
            raise LlmrecError("this model has no soft-prompt user encoder (a user/ folder); train one with "
                              "`llmrec train soft-prompt`, or answer from the history as text (soft=False)")
        item_ids = list(history.item_ids)[-self.soft.config.max_items:]
        if not item_ids:
            raise LlmrecError(f"user {history.user_id}: empty history, nothing to build a soft prompt from")
        unknown = [i for i in item_ids if i not in self.soft_index]
        if unknown:
            raise LlmrecError(f"user {history.user_id}: item {unknown[0]!r} is unknown to the user encoder")
        prompt = render("uqa_soft", user=USER_TOKEN * self.soft.config.k, question=question, options=list(options),
                        answer_kind=answer_kind)
        device = next(self.model.parameters()).device
        ids = torch.tensor([chat_ids(self.tokenizer, prompt)], device=device)
        items = torch.tensor([[self.soft_index[i] for i in item_ids]], device=device)
        self.soft.eval()
        new = self.soft.generate(ids, torch.ones_like(ids), items, max_new_tokens=max_new_tokens,
                                 pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(new[0], skip_special_tokens=True).strip()

    # ------------------------------------------------------------------------------------------ prompts
    def sid_string(self, item_id: str) -> str:
        """The item's semantic ID as the model reads and writes it (single-code levels left out)."""
        tokens = self.sids.tokens_for(item_id)
        return "".join(tokens[lv] for lv in self.levels)

    def history_prompt(self, history: Sequence[str]) -> str:
        self._need_sids()
        unknown = [i for i in history if i not in self.item_row]
        if unknown:
            raise LlmrecError(f"history has {len(unknown)} item(s) not in the SID table, e.g. {unknown[0]!r}")
        window = self.prompt_items(history)
        items = [{"sid": self.sid_string(i), "title": self.titles[i]} for i in window]
        return render(self.config.prompt, history=items, vocab=prompt_vocab(self.vocabulary))

    def encode_prompt(self, history: Sequence[str]) -> list[int]:
        return self.tokenizer(self.history_prompt(history), add_special_tokens=False)["input_ids"]

    # ---------------------------------------------------------------------------------- recommendation
    def recommend_batch(
        self,
        histories: Sequence[Sequence[str]],
        k: int = 10,
        *,
        num_beams: int | None = None,
        exclude_history: bool = True,
        exclude: Sequence[Sequence[str]] | None = None,
        log_prior: np.ndarray | None = None,
        prior_weight: float = 1.0,
    ) -> list[list[dict[str, Any]]]:
        """Top-``k`` distinct real items per history: ``{"item_id", "title", "score"}``, best first.

        ``log_prior`` ``[len(histories), n_items]`` (columns in ``item_ids`` order, e.g. from
        :func:`llmrec.users.pretrain.sequence_log_prior`): shallow fusion with another recommender, see
        :func:`~llmrec.lm.decoding.constrained_beam_search`."""
        self._need_sids()
        if k < 1:
            raise LlmrecError("k must be >= 1")
        for h in histories:
            if len(h) == 0:
                raise LlmrecError("empty history: a user needs at least one item to recommend from")
        prompts = [self.encode_prompt(h) for h in histories]
        excl: list[list[int]] = []
        for u, h in enumerate(histories):
            rows = [self.item_row[i] for i in h] if exclude_history else []
            if exclude is not None:
                rows += [self.item_row[i] for i in exclude[u] if i in self.item_row]
            excl.append(rows)
        recs = constrained_beam_search(
            self.decoding_model(), prompts, self.index, k=k, num_beams=num_beams, exclude=excl,
            pad_token_id=self.tokenizer.pad_token_id or 0,
            prompt_inputs=self.user_state_inputs([self.prompt_items(h) for h in histories]),
            log_prior=log_prior, prior_weight=prior_weight, vocab=self.decode_vocab,
        )
        return [
            [{"item_id": self.item_ids[r.item_index], "title": self.titles[self.item_ids[r.item_index]],
              "score": r.score} for r in rs]
            for rs in recs
        ]

    def recommend(self, history: Sequence[str], k: int = 10, **kwargs: Any) -> list[dict[str, Any]]:
        return self.recommend_batch([history], k, **kwargs)[0]

    def score_items(self, history: Sequence[str]) -> np.ndarray:
        """Exact log-probability of every catalogue item (rows in ``item_ids`` order); small catalogues."""
        return score_all_items(self.decoding_model(), self.encode_prompt(history), self.index,
                               prompt_inputs=self.user_state_inputs([self.prompt_items(history)]),
                               vocab=self.decode_vocab)

    def _need_sids(self) -> None:
        if self.index is None:
            raise LlmrecError("this model has no semantic-ID vocabulary; train one with `llmrec train genrec`")

    # ----------------------------------------------------------------------------------- persistence
    def remember_dataset(self, data) -> None:
        """Record how to reload ``data`` (its DatasetConfig, else its name or folder): saved with the model so
        ``llmrec recommend|answer|profile --model DIR`` find the users without ``--data``."""
        from llmrec.lm.model_dir import dataset_record

        self.dataset = dataset_record(data)

    def load_dataset(self):
        """The dataset this model was trained on (see :meth:`remember_dataset`), or None when not recorded."""
        from llmrec.lm.model_dir import load_dataset_from_record

        return None if self.dataset is None else load_dataset_from_record(self.dataset)

    def save(self, path: str | Path, *, data=None, overwrite: bool = False) -> Path:
        """Write the model directory (layout: :mod:`llmrec.lm.model_dir`); ``data`` = the training dataset
        (same as :meth:`remember_dataset` first). A previous model directory at ``path`` is replaced atomically
        (kept until the new one is complete); an existing file or a non-empty folder that is not a model
        directory is refused unless ``overwrite``."""
        from llmrec.io import guard_output
        from llmrec.lm.model_dir import dtype_of, is_model_dir, write_model_manifest

        guard_output(Path(path), overwrite=overwrite, ours=is_model_dir)
        if data is not None:
            self.remember_dataset(data)
        if self.dataset is None:
            logger.warning("saving %s without its dataset: `llmrec recommend|answer|profile` will need --data "
                           "(pass data= to save, or call remember_dataset)", path)
        path = Path(path)
        with atomic_dir(path) as tmp:
            # The SID rows live in the trainable-tokens adapter; saving the full resized embedding is not needed.
            self.trainable_model.save_pretrained(tmp, save_embedding_layers=False)
            if self.user_states is not None:
                self.user_states.save_encoder(tmp)
            self.tokenizer.save_pretrained(tmp)
            if self.sids is not None:
                self.sids.save(tmp / "sids")
            if self.soft is not None:
                from llmrec.lm.soft_prompt import save_user_model

                save_user_model(self.soft, tmp / "user", self.soft_item_ids)
            self.config.save(tmp / "llmrec_config.json")
            write_json_atomic(tmp / "catalogue.json", self.titles)
            parts = [name for name, present in (("sids", self.sids is not None), ("soft_prompt", self.soft is not None),
                                                ("user_states", self.user_states is not None)) if present]
            write_model_manifest(tmp, dtype=dtype_of(self.model), parts=parts, dataset=self.dataset,
                                 genrec_loss=self.genrec_loss)
        return path

    @classmethod
    def load(cls, path: str | Path, *, dtype: str | None = "auto", trust_remote_code: bool = False,
             allow_pickle: bool = False) -> PersonalLM:
        """A saved PersonalLM. ``dtype``: ``auto`` (default) chooses again for this machine (a model trained in
        bf16 on a CPU with AMX loads in fp32 on an AVX2-only one); ``None`` keeps the dtype it was saved with.

        Every file is checked first (:func:`~llmrec.lm.model_dir.validate_model_dir`): a damaged directory is one
        ConfigError naming the file; pickle-based weights are refused unless ``allow_pickle``."""
        from llmrec.items.semantic_ids import SemanticIds
        from llmrec.lm.model_dir import validate_model_dir

        path = Path(path)
        validate_model_dir(path, allow_pickle=allow_pickle)
        config = PersonalLMConfig.load(path / "llmrec_config.json")
        if "vocabulary" not in json.loads((path / "llmrec_config.json").read_text(encoding="utf-8")):
            # Saved before models recorded their nouns: those were trained on the prompt that always said
            # "A user watched these movies", i.e. the MovieLens nouns; keep the prompt they were trained with.
            from llmrec.data.movielens import ML_VOCABULARY

            config.vocabulary = dataclasses.asdict(ML_VOCABULARY)
        if dtype is not None:
            config.dtype = dtype
        config.dtype = resolve_dtype(config.dtype)  # auto: chosen again for this machine
        tok = _load_saved_tokenizer(path)
        model, _ = load_causal_lm(config.base_model, dtype=config.dtype, trust_remote_code=trust_remote_code)
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        model = _load_saved_adapter(model, path, config.base_model)
        model.eval()
        sids = SemanticIds.load(path / "sids") if (path / "sids").is_dir() else None
        titles = json.loads((path / "catalogue.json").read_text(encoding="utf-8"))
        soft, soft_items = None, None
        if (path / "user").is_dir():
            from llmrec.lm.soft_prompt import load_user_model

            soft, soft_items = load_user_model(model, tok, path / "user")
        plm = cls(model, tok, sids, titles, config, soft=soft, soft_item_ids=soft_items)
        from llmrec.lm.user_states import ENCODER_DIR

        if (path / ENCODER_DIR).is_dir():
            from llmrec.users.sequence import SequenceEncoder

            plm.attach_user_states(SequenceEncoder.load(path / ENCODER_DIR))
            plm.user_states.load_projector(path)
            plm.user_states.eval()
        from llmrec.lm.model_dir import read_model_manifest

        manifest = read_model_manifest(path)  # None: saved before model.json (no dataset recorded)
        plm.dataset = manifest.get("dataset") if manifest else None
        plm.genrec_loss = manifest.get("genrec_loss", "full") if manifest else "full"
        return plm


def _load_saved_tokenizer(path: Path):
    """The tokenizer saved in a model directory (its files were checked by validate_model_dir); what the tokenizers
    library still refuses (e.g. a JSON file of another shape) becomes a ConfigError naming the folder."""
    from transformers import AutoTokenizer

    from llmrec.lm.model_dir import RESAVE, TOKENIZER_FILE

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception for bad files
        raise ConfigError(f"{path / TOKENIZER_FILE}: the saved tokenizer does not load ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); {RESAVE}") from exc


def _load_saved_adapter(model, path: Path, base_model: str):
    """``model`` with the directory's PEFT adapter; a config or weights that do not fit the base model are a
    ConfigError naming the files instead of a size-mismatch traceback."""
    from peft import PeftModel

    from llmrec.lm.model_dir import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RESAVE

    try:
        peft_model = PeftModel.from_pretrained(model, path)
        _fast_adapters(peft_model)  # a loaded model may train on (genrec-pref, resumed runs)
        return peft_model
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ConfigError(f"{path / ADAPTER_CONFIG}, {path / ADAPTER_WEIGHTS}: the adapter does not load onto the "
                          f"base model {base_model!r} ({type(exc).__name__}: {first}); {RESAVE}") from exc


def init_sid_embeddings(
    model, tokenizer, sids, titles: dict[str, str], new_ids: list[int], mode: str,
    item_vectors: np.ndarray | None, seed: int,
) -> None:
    """Initialise the new SID rows (input embeddings; tied models share them with the LM head).

    ``projection``: each SID token's vector is the mean text vector of the items that carry that code; a ridge
    map fitted from item text vectors to the LLM's mean title-token embeddings carries it into the LLM space,
    rescaled to the typical embedding norm. Means of means all point along the vocabulary's mean direction, so
    these rows are nearly parallel (pairwise cosine ~0.93-0.97 on SmolLM2 vs ~0.45 between ordinary tokens): the
    model cannot tell one code from another until training has pulled them apart (a loss plateau at the codes'
    marginal entropy for the first few hundred steps). ``centred``: the same projections, centred, scaled to the
    spread of the vocabulary's rows about their mean and added to that mean, so each SID row sits among the
    vocabulary like an ordinary token and keeps the projection's geometry. ``mean``: the mean embedding.
    ``random``: N(0, std of the rows).
    """
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        base = emb[: new_ids[0]].float()
        norm = base.norm(dim=-1).mean()
        gen = torch.Generator().manual_seed(seed)
        projected = mode in PROJECTED_SID_INITS
        if mode == "random" or (projected and item_vectors is None):
            if projected:
                logger.warning("sid_init=%s needs item_vectors; falling back to random rows", mode)
            rows = torch.randn(len(new_ids), emb.shape[1], generator=gen) * base.std()
        elif mode == "mean":
            rows = base.mean(0, keepdim=True).expand(len(new_ids), -1).clone()
        else:
            vecs = np.asarray(item_vectors, dtype=np.float64)
            title_emb = np.stack([
                base[tokenizer(" " + titles[i], add_special_tokens=False)["input_ids"]].mean(0).numpy()
                for i in sids.item_ids
            ])
            lam = 1e-2 * np.trace(vecs.T @ vecs) / vecs.shape[1]
            w = np.linalg.solve(vecs.T @ vecs + lam * np.eye(vecs.shape[1]), vecs.T @ title_emb)
            codes = np.asarray(sids.codes)
            token_vecs = []
            for level, size in enumerate(sids.codebook_sizes):
                for code in range(size):
                    members = codes[:, level] == code
                    token_vecs.append(vecs[members].mean(0) if members.any() else vecs.mean(0))
            rows = torch.from_numpy(np.stack(token_vecs) @ w).float()
            if mode == "centred":
                centre = base.mean(0)
                spread = (base - centre).norm(dim=-1).mean()
                offsets = rows - rows.mean(0)
                rows = centre + offsets / offsets.norm(dim=-1, keepdim=True).clamp(min=1e-6) * spread
            else:
                rows = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-6) * norm
        emb[new_ids[0]: new_ids[-1] + 1] = rows.to(emb.dtype)
