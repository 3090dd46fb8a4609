"""Item text templates, the vector cache, causal-LM pooling, and one real ml-100k build through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmrec.data.schema import Item
from llmrec.errors import ConfigError, DataError
from llmrec.items.encoders import EncoderConfig, ItemEncoder, encode_items, item_texts

ITEMS = [
    Item("1", "Toy Story", {"year": "1995", "genres": ["Animation", "Comedy"]}),
    Item("2", "Heat", {"genres": ["Action"]}),
    Item("3", "unkonwn", {"year": "unkonwn", "genres": []}),
]


def test_default_template_handles_missing_fields():
    assert item_texts(ITEMS) == ["Toy Story (1995) Animation, Comedy", "Heat Action", "unkonwn"]
    assert item_texts(ITEMS, "{{ title | upper }}/{{ item_id }}") == ["TOY STORY/1", "HEAT/2", "UNKONWN/3"]


def test_bad_items_and_templates():
    with pytest.raises(DataError, match="record 7.*no text"):
        item_texts([*ITEMS, Item("7", "  ", {})])
    with pytest.raises(DataError, match="record 2"):
        item_texts(ITEMS, "{{ title }} {{ year }}")  # StrictUndefined: item 2 has no year
    with pytest.raises(DataError, match="catalogue is empty"):
        item_texts([])
    with pytest.raises(ConfigError, match="not found"):
        item_texts(ITEMS, "prompts/nope.jinja")
    with pytest.raises(DataError):  # sandboxed: no access to internals
        item_texts(ITEMS, "{{ title.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match="encoder.kind"):
        EncoderConfig(kind="seq2seq")


def test_causal_mean_pooling_and_cache(tiny_llama_dir, tmp_path, monkeypatch):
    enc = ItemEncoder(EncoderConfig(model=str(tiny_llama_dir), kind="causal", batch_size=2))
    first = encode_items(ITEMS, enc, cache_dir=tmp_path, show_progress=False)
    assert first.shape == (3, 64) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    # batching and padding do not change a text's vector
    alone = ItemEncoder(EncoderConfig(model=str(tiny_llama_dir), kind="causal", batch_size=1))
    np.testing.assert_allclose(alone.encode_texts(item_texts(ITEMS), show_progress=False), first, atol=1e-5)
    assert len(list((tmp_path / "vectors").glob("*.npy"))) == 1
    monkeypatch.setattr(ItemEncoder, "encode_texts", lambda *a, **k: pytest.fail("re-encoded despite the cache"))
    np.testing.assert_array_equal(encode_items(ITEMS, enc, cache_dir=tmp_path, show_progress=False), first)


@pytest.mark.slow
def test_ml100k_minilm_build_cli(ml100k, tmp_path, capsys):
    """Real titles through MiniLM (cached after the first run), residual k-means 3x256, via the CLI."""
    from llmrec.cli import main
    from llmrec.items.semantic_ids import SemanticIds

    assert main(["items", "build", "--dataset", "ml-100k", "--quantizer", "rkmeans", "--out",
                 str(tmp_path / "sids"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["items"] == 1682 and report["unique_fraction"] == 1.0
    assert report["utilization"][0] >= 0.9 and len(report["utilization"]) == 3
    assert report["category_coherence"] > 1.5 and 0 <= report["collision_rate"] < 0.1
    assert {"seconds", "encode_seconds", "quantize_seconds", "collision_rate_nearest"} <= set(report)
    sids = SemanticIds.load(tmp_path / "sids")
    assert len(sids) == 1682 and sids.codebook_sizes[:3] == (256, 256, 256)
    assert len(sids.sid_string("1")) > 0 and sids.item_for_string(sids.sid_string("50")) == "50"
