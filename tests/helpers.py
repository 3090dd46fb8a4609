"""Builders for test fixtures: tiny random Llama folders, tiny GGUF files, small MovieLens folders and
generic JSONL / JSON / CSV / TSV / Parquet datasets, and ``load_script`` for the benchmark scripts' summaries.
``conftest.py`` wraps these as fixtures; import them directly (``from helpers import ...``) when a test needs a
variant."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (not on the import path): its summary functions tested on hand-made runs."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_sid_personal_lm(model_dir: str | Path, data, seed: int = 0):
    """A fp32 PersonalLM on ``model_dir`` with random 2-level semantic IDs (8 x 8 codes) for ``data``'s items."""
    import numpy as np

    from llmrec.items.semantic_ids import SemanticIds
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig

    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, 8, len(data.items)), rng.integers(0, 8, len(data.items))], axis=1)
    sids = SemanticIds.from_quantized(list(data.items), codes, (8, 8))
    return PersonalLM.create(sids, data.items, PersonalLMConfig(base_model=str(model_dir), dtype="fp32",
                                                                sid_init="random"))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")

# ---------------------------------------------------------------- tiny models


def tiny_llama_config(vocab_size: int, **overrides: Any):
    """A 2-layer, hidden-64 Llama config (GQA 4 heads / 2 KV heads, tied embeddings)."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, rms_norm_eps=1e-5,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def make_tiny_llama_dir(dest: str | Path, tokenizer_dir: str | Path, seed: int = 0, **config: Any) -> Path:
    """Save a random tiny ``LlamaForCausalLM`` plus the tokenizer files of ``tokenizer_dir`` into ``dest``.

    The result loads exactly like a real checkpoint (``AutoModelForCausalLM.from_pretrained(dest)``).
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (Path(tokenizer_dir) / name).exists():
            shutil.copy2(Path(tokenizer_dir) / name, dest / name)
    tok = AutoTokenizer.from_pretrained(dest)
    cfg = tiny_llama_config(
        len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id, **config,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(dest)
    return dest


def _llama_cpp_permute(w, n_head: int):
    """llama.cpp's q/k row permutation (convert_hf_to_gguf.py); transformers undoes it when loading a GGUF."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: str | Path, seed: int = 0, quantize: bool = True):
    """Write a tiny Llama as a llama.cpp GGUF (byte-level BPE vocab of 263 tokens, 2D weights in Q8_0, like
    the shipped SmolLM2 file). Returns the random ``LlamaForCausalLM`` it was written from."""
    import gguf
    import torch
    from transformers import LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["h e", "l l", "he ll", "hell o"]
    tokens = special + list(bytes_to_unicode().values()) + ["he", "ll", "hell", "hello"]
    types = [gguf.TokenType.CONTROL] * len(special) + [gguf.TokenType.NORMAL] * (len(tokens) - len(special))
    cfg = tiny_llama_config(len(tokens), bos_token_id=1, eos_token_id=2, pad_token_id=2, rope_theta=10000.0)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(cfg.hidden_size // n_head)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")

    def add(name: str, array) -> None:
        if quantize and array.ndim == 2:
            qtype = gguf.GGMLQuantizationType.Q8_0
            w.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, array)

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        add(f"blk.{i}.attn_q.weight", _llama_cpp_permute(sd[p + "self_attn.q_proj.weight"], n_head))
        add(f"blk.{i}.attn_k.weight", _llama_cpp_permute(sd[p + "self_attn.k_proj.weight"], n_kv))
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


# ---------------------------------------------------------------- MovieLens folders

# (item_id, title with year, release date, genre names); item 3 has an accented latin-1 title.
ML_ITEMS: list[tuple[str, str, str, list[str]]] = [
    ("1", "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"]),
    ("2", "GoldenEye (1995)", "01-Jan-1995", ["Action", "Adventure", "Thriller"]),
    ("3", "Misérables, Les (1995)", "01-Jan-1995", ["Drama", "Musical"]),
    ("4", "Heat (1995)", "01-Jan-1995", ["Action", "Crime", "Thriller"]),
    ("5", "Alien (1979)", "01-Jan-1979", ["Horror", "Sci-Fi"]),
]
# (user, item, rating, timestamp), deliberately NOT sorted by time; user 10 has a timestamp tie (items 4
# then 2 in file order), user 30 has two interactions only.
ML_RATINGS: list[tuple[str, str, int, int]] = [
    ("10", "3", 4, 300),
    ("20", "1", 5, 100),
    ("10", "1", 3, 100),
    ("10", "4", 2, 200),
    ("20", "5", 1, 150),
    ("10", "2", 5, 200),
    ("20", "2", 4, 120),
    ("30", "5", 3, 500),
    ("20", "3", 4, 400),
    ("30", "1", 2, 50),
]
ML_USERS: list[tuple[str, str, str, str, str]] = [
    ("10", "24", "M", "technician", "85711"),
    ("20", "53", "F", "other", "94043"),
    ("30", "23", "M", "writer", "32067"),
]
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


def write_grouplens(
    folder: str | Path,
    items: Sequence[tuple[str, str, str, list[str]]] = ML_ITEMS,
    ratings: Sequence[tuple[str, str, float, int]] = ML_RATINGS,
    users: Sequence[tuple[str, ...]] | None = ML_USERS,
    with_genre_file: bool = True,
    encoding: str = "latin-1",
) -> Path:
    """The original GroupLens layout: ``u.item`` / ``u.user`` / ``u.genre`` ('|'-separated, latin-1) and
    ``u.data`` (tab-separated)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for item_id, title, date, genres in items:
        flags = ["1" if g in genres else "0" for g in GENRES]
        lines.append("|".join([item_id, title, date, "", f"http://example.org/{item_id}", *flags]))
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode(encoding))
    if with_genre_file:
        (folder / "u.genre").write_bytes(
            "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)).encode(encoding) + b"\n"
        )
    if users is not None:
        (folder / "u.user").write_bytes("".join("|".join(u) + "\n" for u in users).encode(encoding))
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r:g}\t{t}\n" for u, i, r, t in ratings))
    return folder


def write_recbole(
    folder: str | Path,
    items: Sequence[tuple[str, str, str, list[str]]] = ML_ITEMS,
    ratings: Sequence[tuple[str, str, float, int]] = ML_RATINGS,
    users: Sequence[tuple[str, ...]] | None = ML_USERS,
) -> Path:
    """The RecBole atomic layout (``ml-100k.{item,inter,user}``, typed headers, tab-separated, UTF-8)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    item_lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    for item_id, title, date, genres in items:
        item_lines.append(f"{item_id}\t{title[:-7]}\t{date[-4:]}\t{' '.join(genres)}")
    (folder / "ml-100k.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r:g}\t{t}" for u, i, r, t in ratings]
    (folder / "ml-100k.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    if users is not None:
        lines = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
        lines += ["\t".join(u) for u in users]
        (folder / "ml-100k.user").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------- generic record files

GENERIC_ITEMS: list[dict[str, Any]] = [
    {"item_id": "a", "title": "Dune", "author": "Herbert"},
    {"item_id": "b", "title": "Emma", "author": "Austen"},
    {"item_id": "c", "title": "Ulysses", "author": "Joyce"},
]
GENERIC_INTERACTIONS: list[dict[str, Any]] = [
    {"user_id": "u1", "item_id": "b", "timestamp": 20, "rating": 4.5, "text": "lovely"},
    {"user_id": "u1", "item_id": "a", "timestamp": 10, "rating": 3, "text": ""},
    {"user_id": "u2", "item_id": "c", "timestamp": 5, "rating": 1, "text": "long"},
    {"user_id": "u1", "item_id": "c", "timestamp": 30, "rating": 5, "text": "great"},
]


def write_records(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """Write dict records in the format named by the suffix: .jsonl, .json, .csv, .tsv or .parquet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(list(records)), encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        fields = list(dict.fromkeys(k for r in records for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(records)), path)
    else:
        raise ValueError(f"write_records: unsupported suffix {suffix!r}")
    return path


def write_generic(
    folder: str | Path,
    fmt: str = "jsonl",
    items: Sequence[dict[str, Any]] = GENERIC_ITEMS,
    interactions: Sequence[dict[str, Any]] = GENERIC_INTERACTIONS,
) -> tuple[Path, Path]:
    """``items.<fmt>`` and ``interactions.<fmt>`` in ``folder``; returns their paths."""
    folder = Path(folder)
    return (write_records(folder / f"items.{fmt}", items),
            write_records(folder / f"interactions.{fmt}", interactions))


# ---------------------------------------------------------------- LaMP files

LAMP_QUESTIONS: list[dict[str, Any]] = [
    {"id": "310", "input": "What is the score of this review? Great plot, weak ending.",
     "profile": [{"id": "3100", "text": "Loved it", "score": "5", "date": "2015-01-01"},
                 {"id": "3101", "text": "Meh", "score": "2"}]},
    {"id": "311", "input": "What is the score of this review? Dull.",
     "profile": [{"id": "3110", "text": "Fine book", "score": "4"}]},
    {"id": "312", "input": "What is the score of this review? Superb from start to finish.", "profile": []},
]
LAMP_OUTPUTS: dict[str, Any] = {
    "task": "LaMP_3",
    "golds": [{"id": "310", "output": "3"}, {"id": "311", "output": "1"}, {"id": "312", "output": "5"}],
}


def write_lamp(folder: str | Path, questions: Any = None, outputs: Any = None) -> tuple[Path, Path]:
    """``questions.json`` and ``outputs.json`` in the official LaMP shapes (defaults: 3 LaMP_3 questions)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    q = folder / "questions.json"
    o = folder / "outputs.json"
    q.write_text(json.dumps(LAMP_QUESTIONS if questions is None else questions), encoding="utf-8")
    o.write_text(json.dumps(LAMP_OUTPUTS if outputs is None else outputs), encoding="utf-8")
    return q, o
