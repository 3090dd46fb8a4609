"""Profile benchmark helpers: option read-outs and non-LLM references by hand; the KV-cached option scorer of
scripts/bench_profiles.py against HFModel.score_options on a tiny random Llama."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import load_script
from test_uqa import hand_data

from llmrec.data.schema import UserHistory
from llmrec.errors import DataError
from llmrec.evaluation.models import HFModel
from llmrec.tasks.profile import expected_rating, majority_context_genre, mean_context_rating


def _bench():
    return load_script("bench_profiles")


def test_expected_rating_by_hand():
    options = ["1", "2", "3", "4", "5"]
    tiny = np.finfo(float).tiny  # log(0) stand-in
    assert expected_rating(np.log(np.array([0, 0, 0, 1, 0]) + tiny), options) == pytest.approx(4.0)
    assert expected_rating([0.0] * 5, options) == pytest.approx(3.0)  # uniform
    assert expected_rating(np.log(np.array([0.5, 0, 0, 0, 0.5]) + tiny) - 100, options) == pytest.approx(3.0)
    with pytest.raises(DataError, match="5 options"):
        expected_rating([0.0, 0.0], options)
    with pytest.raises(DataError, match="must be numbers"):
        expected_rating([0.0, 0.0], ["low", "high"])


def test_context_references_by_hand():
    data = hand_data()
    ctx = data.histories()["u1"].prefix(9)
    # primary genres: Drama, Comedy, Children's, Animation, Comedy, Action, Action, Action, Crime -> Action (3)
    assert majority_context_genre(ctx, data) == "Action"
    assert mean_context_rating(ctx) == pytest.approx(4.0)
    unrated = UserHistory("u9", ("8", "4"), (1, 2), (None, None))  # unknown-genre movie, Casablanca
    assert majority_context_genre(unrated, data) == "Drama" and mean_context_rating(unrated) is None


def test_cached_option_scores_match_score_options(tiny_llama):
    reader = HFModel(loaded=(tiny_llama.model, tiny_llama.tokenizer))
    prompts = ["What is the main genre?\nAnswer with only the genre.", "Rate it from 1 to 5."]
    for options in (["Action", "Film-Noir", "Sci-Fi", "War"], ["1", "2", "3", "4", "5"]):
        want = reader.score_options(prompts, options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = np.stack([_bench().score_options_cached(reader, p, options) for p in prompts])
        np.testing.assert_allclose(got, want, atol=1e-4)
        # the options reuse the prompt's KV cache under the forward's own name (`cache=` in transformers 5.x)
        assert not [str(w.message) for w in caught if "past_key_values" in str(w.message)]
