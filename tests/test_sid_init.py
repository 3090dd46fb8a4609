"""SID row initialisation (llmrec.lm.personal.init_sid_embeddings): ``centred`` keeps the projection's geometry
but gives the rows the vocabulary's own spread, where ``projection`` leaves them nearly parallel when the item
vectors share a common direction (as sentence-encoder vectors do)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmrec.items.semantic_ids import SemanticIds
from llmrec.lm.personal import PersonalLMConfig, init_sid_embeddings
from llmrec.tasks.uqa import item_title


def _mean_offdiag_cosine(rows: torch.Tensor) -> float:
    unit = torch.nn.functional.normalize(rows, dim=-1)
    cos = unit @ unit.T
    return float(cos[~torch.eye(len(rows), dtype=torch.bool)].mean())


def _init_rows(tiny_llama_dir, data, mode: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with torch.no_grad():  # a vocabulary with a common direction, as trained LLMs have (random init has none)
        emb = model.get_input_embeddings().weight
        emb.add_(torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(1)) * emb.std() * 3)
    rng = np.random.default_rng(0)
    items = list(data.items)
    codes = np.stack([rng.integers(0, 8, len(items)), rng.integers(0, 8, len(items))], axis=1)
    sids = SemanticIds.from_quantized(items, codes, (8, 8))
    # sentence-encoder-like vectors: a shared direction plus a small item-specific part
    vectors = rng.normal(size=16) * 4 + rng.normal(size=(len(items), 16))
    old = len(tok)
    tok.add_tokens(sids.token_strings())
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    new_ids = list(range(old, len(tok)))
    titles = {i: item_title(data.items[i]) for i in items}
    init_sid_embeddings(model, tok, sids, titles, new_ids, mode, vectors, seed=0)
    weight = model.get_input_embeddings().weight.detach()
    return weight[:old], weight[old:], sids


def test_centred_rows_spread_like_the_vocabulary(tiny_llama_dir, ml100k):
    base, projection, sids = _init_rows(tiny_llama_dir, ml100k, "projection")
    _, centred, _ = _init_rows(tiny_llama_dir, ml100k, "centred")
    level = slice(0, sids.codebook_sizes[0])
    vocab_cos = _mean_offdiag_cosine(base[torch.randperm(len(base), generator=torch.Generator().manual_seed(0))[:64]])
    assert _mean_offdiag_cosine(projection[level]) > 0.9  # the failure mode: codes indistinguishable at step 0
    assert abs(_mean_offdiag_cosine(centred[level]) - vocab_cos) < 0.2
    # each row = vocabulary mean + an offset of the vocabulary's typical size
    centre = base.mean(0)
    spread = (base - centre).norm(dim=-1).mean()
    offsets = centred - centre
    torch.testing.assert_close(offsets.norm(dim=-1), spread.expand(len(centred)), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(centred, projection)


def test_sid_init_choices_match_the_recipe_option():
    from llmrec.lm.personal import SID_INITS
    from llmrec.recipes.genrec import GenrecModelConfig

    assert GenrecModelConfig.__dataclass_fields__["sid_init"].metadata["choices"] == SID_INITS
    with pytest.raises(Exception, match="sid_init must be one of"):
        PersonalLMConfig(sid_init="spread")


def test_bench_sid_init_summary_on_hand_made_runs():
    from helpers import load_script

    bench = load_script("bench_sid_init")
    assert bench.plateau_exit([[10, 12.9], [20, 4.9], [30, 3.9], [40, 3.1]], 4.0) == 30
    assert bench.plateau_exit([[10, 12.9], [20, 4.9]], 4.0) is None

    def run(v150: float, v300: float, losses: list[float]) -> dict:
        return {"valid_curve": [{"step": 150, "eval_ndcg_at_10": v150}, {"step": 300, "eval_ndcg_at_10": v300}],
                "loss_curve": [[10 * (i + 1), x] for i, x in enumerate(losses)]}

    runs = {"projection": {"0": run(0.02, 0.06, [9, 4.9, 3.5]), "1": run(0.03, 0.05, [9, 4.9, 4.8]),
                           "2": run(0.5, 0.5, [1.0])},  # seed 2 has no centred run: left out of the summary
            "centred": {"0": run(0.05, 0.07, [9, 3.9]), "1": run(0.04, 0.06, [9, 3.0])}}
    out = bench.summarise(runs, ["projection", "centred"], 4.0)
    assert out["seeds"] == ["0", "1"]
    proj, cent = out["inits"]["projection"], out["inits"]["centred"]
    assert proj["mean_valid_ndcg@10"] == pytest.approx({"150": 0.025, "300": 0.055})
    assert proj["plateau_exit_steps"] == [30, None] and proj["median_plateau_exit"] == 30
    assert cent["plateau_exit_steps"] == [20, 20]
    assert out["paired_vs_projection"]["centred"]["0"] == pytest.approx({"150": 0.03, "300": 0.01})
    assert bench.summarise({"projection": {"0": run(0.1, 0.1, [9])}}, ["projection", "centred"], 4.0)["inits"] == {}
