"""The tiny random Llama fixtures, and llmrec.lm.loading on them (any local folder works like the default)."""

from __future__ import annotations

import json

import pytest
import torch

from llmrec.errors import LlmrecError
from llmrec.lm.loading import load_causal_lm, parse_dtype


def test_tiny_llama_dir_is_a_real_checkpoint(tiny_llama_dir):
    names = {p.name for p in tiny_llama_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (64, 2, 4)
    assert cfg["tie_word_embeddings"] is True and cfg["vocab_size"] == 49152


def test_load_causal_lm_from_a_folder(tiny_llama_dir, monkeypatch):
    import llmrec.hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(llmrec.hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    model, tok = load_causal_lm(tiny_llama_dir)  # default dtype auto: bf16 on a CPU with native bf16
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    assert len(tok) == model.config.vocab_size == 49152
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    model32, _ = load_causal_lm(str(tiny_llama_dir), dtype="fp32")
    assert model32.dtype == torch.float32


def test_tiny_llama_generates_greedily_and_deterministically(tiny_llama):
    model, tok, _ = tiny_llama
    enc = tok.apply_chat_template([{"role": "user", "content": "Recommend a film."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    assert tok.decode(enc["input_ids"][0]).startswith("<|im_start|>")
    with torch.no_grad():
        a = model.generate(**enc, max_new_tokens=5, do_sample=False)
        b = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert a.shape == (1, enc["input_ids"].shape[1] + 5)
    assert torch.equal(a, b)


def test_tiny_llama_copies_are_independent(tiny_llama, _tiny_llama_loaded):
    model, tok, _ = tiny_llama
    tok.add_tokens(["<a_0>", "<a_1>"])
    model.resize_token_embeddings(len(tok))
    assert model.config.vocab_size == 49154
    assert len(_tiny_llama_loaded.tokenizer) == 49152
    assert _tiny_llama_loaded.model.get_input_embeddings().weight.shape[0] == 49152


def test_tiny_llama_trains(tiny_llama):
    """A few real optimizer steps on one batch lower the loss (gradients flow through the tied weights)."""
    model, tok, _ = tiny_llama
    model.train()
    torch.manual_seed(0)
    batch = tok(["user 1 watched Heat then Alien", "user 2 watched Emma"], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[0] == pytest.approx(float(torch.log(torch.tensor(49152.0))), rel=0.05)  # random init ~ uniform
    assert losses[-1] < losses[0] - 1.0


def test_make_tiny_llama_variants(make_tiny_llama, tiny_llama_dir):
    from safetensors.torch import load_file

    untied = make_tiny_llama(tie_word_embeddings=False, num_hidden_layers=1)
    model, _ = load_causal_lm(untied, dtype="fp32")
    assert model.config.num_hidden_layers == 1
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    base = load_file(tiny_llama_dir / "model.safetensors")
    same = load_file(make_tiny_llama(seed=0) / "model.safetensors")
    other = load_file(make_tiny_llama(seed=1) / "model.safetensors")
    key = "model.layers.0.mlp.up_proj.weight"
    assert all(torch.equal(base[k], same[k]) for k in base)  # seeded: rebuilt folders are identical
    assert not torch.equal(base[key], other[key])


def test_load_errors(tiny_llama_dir):
    with pytest.raises(LlmrecError, match="unknown dtype 'fp8'"):
        parse_dtype("fp8")
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    assert parse_dtype("auto") in (torch.bfloat16, torch.float32, torch.float16)  # by hardware: test_hardware_cli
    if not torch.cuda.is_available():
        with pytest.raises(LlmrecError, match="needs a CUDA GPU"):
            load_causal_lm(tiny_llama_dir, load_in_4bit=True)


def test_load_from_an_empty_folder_is_an_llmrec_error(tmp_path):
    with pytest.raises(LlmrecError, match="cannot load model"):
        load_causal_lm(tmp_path)
