"""Offline defaults: cache location, status, missing-resource errors, wheel extraction and GGUF conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import write_tiny_gguf

from llmrec import resources
from llmrec.errors import ResourceMissingError

GGUF_NAME = Path(resources.RESOURCES[resources.DEFAULT_LLM].member).name
REAL_CACHE = resources.cache_dir()  # taken before any test points LLMREC_CACHE elsewhere


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(resources.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resources.cache_dir() == tmp_path / "xdg" / "llmrec"
    monkeypatch.setenv(resources.CACHE_ENV, str(tmp_path / "env"))
    assert resources.cache_dir() == tmp_path / "env"
    assert resources.cache_dir(tmp_path / "arg") == tmp_path / "arg"  # the argument wins
    assert (tmp_path / "arg").is_dir() and (tmp_path / "env").is_dir()


def test_status_of_the_real_cache():
    st = resources.status()
    assert set(st) == {"ml-100k", "all-minilm-l6-v2", "smollm2-135m"}
    assert all(st.values()), f"`make test` fetches the offline defaults first; status: {st}"
    assert (Path(st["ml-100k"]) / "ml-100k.inter").exists()
    assert (Path(st["all-minilm-l6-v2"]) / "model.safetensors").exists()
    assert (Path(st["smollm2-135m"]) / "model.safetensors").exists()


def test_status_does_not_fetch(empty_cache, monkeypatch):
    monkeypatch.delenv(resources.NO_FETCH_ENV)  # even with fetching allowed, status only looks
    assert resources.status() == {"ml-100k": None, "all-minilm-l6-v2": None, "smollm2-135m": None}
    assert list(empty_cache.iterdir()) == []


@pytest.mark.parametrize("fn", [resources.movielens_100k_dir, resources.minilm_dir, resources.smollm2_dir])
def test_missing_resource_names_the_fix(empty_cache, fn):
    with pytest.raises(ResourceMissingError, match="run `llmrec resources fetch`") as err:
        fn()
    assert resources.NO_FETCH_ENV in str(err.value)
    with pytest.raises(ResourceMissingError, match="llmrec resources fetch") as err:
        fn(fetch=False)
    assert str(empty_cache) in str(err.value)
    assert not any(p.name.endswith(".tmp") for p in empty_cache.rglob("*"))  # no half-made folders left


def test_missing_data_and_model_through_the_public_api(empty_cache):
    from llmrec.data import load_dataset
    from llmrec.lm.loading import load_causal_lm

    with pytest.raises(ResourceMissingError, match="llmrec resources fetch"):
        load_dataset("ml-100k")
    with pytest.raises(ResourceMissingError, match="llmrec resources fetch"):
        load_causal_lm()


@pytest.mark.parametrize("value, off", [("1", True), ("yes", True), ("0", False), ("false", False), ("", False)])
def test_no_auto_fetch_values(monkeypatch, value, off):
    monkeypatch.setenv(resources.NO_FETCH_ENV, value)
    assert resources._no_auto_fetch() is off


def test_movielens_extracted_from_a_cached_wheel(empty_cache):
    """The real recbole wheel (cached by `make test`) is unpacked without pip, network or importing recbole."""
    wheels = sorted((REAL_CACHE / "wheels").glob("recbole-*.whl"))
    if not wheels:
        pytest.skip("recbole wheel not cached (the data came from an installed package)")
    (empty_cache / "wheels").mkdir()
    shutil.copy2(wheels[-1], empty_cache / "wheels" / wheels[-1].name)
    folder = resources.movielens_100k_dir()
    assert folder == empty_cache / "data" / "ml-100k"
    assert {"ml-100k.inter", "ml-100k.item", "ml-100k.user"} <= {p.name for p in folder.iterdir()}
    assert sum(1 for _ in open(folder / "ml-100k.inter", encoding="utf-8")) == 100_001
    assert resources.status()["ml-100k"] == str(folder)


def test_resolve_aliases(monkeypatch, tmp_path):
    real = resources.smollm2_dir(fetch=False)
    for alias in (None, "default", "smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert resources.resolve_llm(alias) == str(real)
    assert resources.resolve_llm("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # hub ids pass through
    assert resources.resolve_llm(tmp_path) == str(tmp_path)
    assert resources.resolve_encoder("all-MiniLM-L6-v2") == str(resources.minilm_dir(fetch=False))
    assert resources.resolve_encoder("BAAI/bge-small-en") == "BAAI/bge-small-en"


def test_converted_default_model_folder():
    """What the one-time GGUF conversion left in the cache is a plain fp32 safetensors checkpoint."""
    from safetensors import safe_open

    folder = resources.smollm2_dir(fetch=False)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith(".gguf") for n in names)
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"] is True
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = list(f.keys())
        emb = f.get_slice("model.embed_tokens.weight")
        assert emb.get_shape() == [49152, 576] and emb.get_dtype() == "F32"
    assert len(keys) == 1 + 30 * 9 + 1  # embeddings, 9 tensors per layer, final norm (lm_head tied)


def test_gguf_conversion_on_a_tiny_gguf(tmp_path):
    """The conversion code path, on a tiny Q8_0 GGUF written here: weights come back dequantized (q/k
    un-permuted), config has no quantization_config, and the tokenizer is a working fast tokenizer."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    gguf_path = tmp_path / "src" / "tiny.gguf"
    gguf_path.parent.mkdir()
    original = write_tiny_gguf(gguf_path)
    out = tmp_path / "converted"
    resources._convert_gguf(gguf_path, out)

    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["hidden_size"] == 64 and cfg["num_key_value_heads"] == 2
    weights = load_file(out / "model.safetensors")
    ref = original.state_dict()
    assert set(weights) == set(ref) - {"lm_head.weight"}  # tied
    for name, value in weights.items():
        assert value.dtype == torch.float32
        scale = ref[name].abs().max()
        assert torch.allclose(value, ref[name], atol=float(scale) / 100), name  # Q8_0 error < 1% of range
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.convert_ids_to_tokens(tok("hello hi")["input_ids"]) == ["hello", "Ġ", "h", "i"]
    assert tok.eos_token == "<|im_end|>"


def test_smollm2_dir_converts_once_from_the_cached_gguf(tmp_path, monkeypatch):
    """The whole first-use path of the default model, with a tiny GGUF standing in for the 98 MB one."""
    monkeypatch.setenv(resources.NO_FETCH_ENV, "1")
    gguf_dir = tmp_path / "gguf" / "SmolLM2-135M-Instruct"
    gguf_dir.mkdir(parents=True)
    write_tiny_gguf(gguf_dir / GGUF_NAME)
    folder = resources.smollm2_dir(tmp_path)
    assert folder == tmp_path / "models" / "SmolLM2-135M-Instruct"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resources.smollm2_dir(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert resources.status(tmp_path)["smollm2-135m"] == str(folder)

    from llmrec.lm.loading import load_causal_lm

    model, tok = load_causal_lm(folder, dtype="fp32")
    out = model.generate(**tok("hello", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 4)


@pytest.mark.slow
def test_real_default_model_generates():
    """The one real-model test: the converted SmolLM2-135M-Instruct from the cache, greedy, bf16."""
    from llmrec.lm.loading import load_causal_lm

    model, tok = load_causal_lm()
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok.pad_token is not None
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer  # greedy decoding of this prompt gives "The capital of France is Paris."
