"""The runner: LaMP files through a model, resume from the prediction cache, baselines, HF model contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmrec.evaluation.runner import RunConfig, run

FIX = Path(__file__).parent / "fixtures" / "lamp"
LAMP3 = {"questions": str(FIX / "lamp3_dev_questions.json"), "outputs": str(FIX / "lamp3_dev_outputs.json")}


class EchoModel:
    """Answers '4' to everything; counts prompts; can fail after a number of calls (a crash mid-run)."""

    name = "echo"

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def generate(self, prompts, max_new_tokens):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.prompts.extend(prompts)
        return ["4"] * len(prompts)

    def score_options(self, prompts, options):
        self.prompts.extend(prompts)
        return np.log(np.tile([0.1, 0.1, 0.2, 0.4, 0.2], (len(prompts), 1)))


def cfg(out, **kw):
    base = dict(tasks=("lamp_3",), out=str(out), model="echo", task_args=LAMP3, n_boot=50, progress=False,
                batch_size=1, method="generate", retrievers=("none",))
    base.update(kw)
    return RunConfig(**base)


def test_lamp_run_writes_results_predictions_and_report(tmp_path):
    model = EchoModel()
    res = run(cfg(tmp_path, retrievers=("none", "bm25"), ks=(1, 2)), model=model)
    variants = res["tasks"]["lamp_3"]["variants"]
    assert set(variants) == {"no-profile/gen", "bm25@1/gen", "bm25@2/gen"}
    assert variants["bm25@1/gen"]["metrics"]["mae"]["value"] == pytest.approx((1 + 3 + 0) / 3)
    assert "versions" in res and tuple(res["config"]["tasks"]) == ("lamp_3",)
    pred = json.loads((tmp_path / "lamp_3" / "bm25@1_gen.predictions.json").read_text())
    assert pred["task"] == "LaMP_3" and [g["id"] for g in pred["golds"]] == ["3001", "3002", "3003"]
    # BM25 picked the profile item sharing words with the review ("pages fell out" -> the binding review)
    assert any('"Cheap binding, pages fell out."' in p for p in model.prompts)
    html = (tmp_path / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<script" not in html
    assert "mae vs k" in html and "Rating error distribution" in html
    assert json.loads((tmp_path / "results.json").read_text())["tasks"]["lamp_3"]["n"] == 3


def test_interrupted_run_resumes_from_the_cache(tmp_path):
    with pytest.raises(RuntimeError):
        run(cfg(tmp_path), model=EchoModel(fail_after=1))
    cache = next((tmp_path / "cache" / "lamp_3").glob("*.jsonl"))
    assert len(cache.read_text().splitlines()) == 2  # header + the one finished batch
    with cache.open("a") as f:
        f.write('{"id": "3002", "outp')  # a torn write from the crash
    model = EchoModel()
    res = run(cfg(tmp_path), model=model)
    assert len(model.prompts) == 2  # only the unfinished questions were predicted again
    assert res["tasks"]["lamp_3"]["variants"]["no-profile/gen"]["timings"]["predicted_now"] == 2
    model = EchoModel()
    run(cfg(tmp_path), model=model)
    assert model.prompts == []  # everything cached
    model = EchoModel()
    run(cfg(tmp_path, max_tokens=3, retrievers=("recency",), ks=(1,)), model=model)
    assert len(model.prompts) == 3  # a different config never reuses stale predictions


def test_score_options_expected_rating_and_calibration(tmp_path):
    res = run(cfg(tmp_path, method="score_options"), model=EchoModel())
    variants = res["tasks"]["lamp_3"]["variants"]
    expected = 0.1 * 1 + 0.1 * 2 + 0.2 * 3 + 0.4 * 4 + 0.2 * 5  # 3.5 for every question
    golds = [5, 1, 4]
    assert variants["no-profile/score"]["metrics"]["mae"]["value"] == pytest.approx(
        np.mean([abs(expected - g) for g in golds]))
    # identical rows: batch calibration removes the prior entirely -> uniform -> expectation 3
    assert variants["no-profile/score+calib"]["metrics"]["mae"]["value"] == pytest.approx(
        np.mean([abs(3 - g) for g in golds]))


@pytest.mark.slow
def test_baselines_on_ml100k(tmp_path):
    res = run(RunConfig(tasks=("ml100k_rating", "ml100k_next_genre", "ml100k_next_item"), out=str(tmp_path),
                        baselines=("user-mean", "global-mean", "majority", "user-majority", "popularity"),
                        sample=60, n_boot=50, progress=False, report=False))
    rating = res["tasks"]["ml100k_rating"]["variants"]
    assert res["tasks"]["ml100k_rating"]["n"] == 60
    assert set(rating) == {"baseline:user-mean", "baseline:global-mean"}
    assert 0.3 < rating["baseline:user-mean"]["metrics"]["mae"]["value"] < 1.5
    genre = res["tasks"]["ml100k_next_genre"]["variants"]
    assert genre["baseline:user-majority"]["metrics"]["invalid_output_rate"]["value"] == 0
    item = res["tasks"]["ml100k_next_item"]["variants"]["baseline:popularity"]["metrics"]
    assert 0 <= item["recall@5"]["value"] <= item["recall@10"]["value"] <= 1


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llmrec.resources import smollm2_dir

    path = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_hf_model_contract_is_greedy_and_padding_safe(tiny_model_dir):
    from llmrec.evaluation.models import HFModel

    m = HFModel(str(tiny_model_dir), dtype="fp32")
    prompts = ["Rate this movie.", "A much longer prompt about a movie the user may or may not like at all."]
    a = m.generate(prompts, 3)
    assert len(a) == 2 and a == m.generate(prompts, 3)
    assert m.model.generation_config.do_sample is False
    fast = m.score_options(prompts, ["1", "2"])  # single-token options: one forward pass
    assert fast.shape == (2, 2) and np.isfinite(fast).all()
    slow = m.score_options(prompts, ["1", "12"])  # multi-token path, with left padding
    np.testing.assert_allclose(slow[:, 0], fast[:, 0], atol=1e-4)
    alone = m.score_options(prompts[:1], ["1", "2"])  # padding must not change the short prompt's scores
    np.testing.assert_allclose(alone[0], fast[0], atol=1e-4)
