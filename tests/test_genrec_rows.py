"""Columnar genrec rows (datasets.map workers, cached Arrow files) equal the dict-of-histories rows, row for row;
the columnar split equals leave_one_out(histories()) on ml-100k and the bookshop."""

from __future__ import annotations

import numpy as np
import pytest

from llmrec.data.split_view import columnar_split
from llmrec.data.splits import leave_one_out
from llmrec.items.semantic_ids import SemanticIds
from llmrec.lm.personal import PersonalLM, PersonalLMConfig
from llmrec.tasks.genrec import build_genrec_rows


@pytest.fixture(scope="module")
def bookshop(tmp_path_factory):
    from llmrec.data import load_dataset
    from llmrec.data.synthetic import write_bookshop

    folder = tmp_path_factory.mktemp("bookshop")
    write_bookshop(folder)
    return load_dataset(folder / "bookshop.yaml")


def _plm(data, tiny_llama_dir, max_history: int = 6, seed: int = 0, drop: str | None = None) -> PersonalLM:
    rng = np.random.default_rng(seed)
    items = [i for i in data.items if i != drop]
    sids = SemanticIds.from_quantized(items, np.stack([rng.integers(0, 8, len(items)),
                                                       rng.integers(0, 8, len(items))], axis=1), (8, 8))
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", sid_init="random", max_history=max_history)
    return PersonalLM.create(sids, data.items, cfg, vocabulary=data.vocabulary)


def _same(a, b) -> None:
    assert (a.sequences, a.alignment, a.target_tokens, a.tokens) == (b.sequences, b.alignment, b.target_tokens,
                                                                     b.tokens)
    assert a.rows.column_names == b.rows.column_names
    assert a.rows.features == b.rows.features
    for name in a.rows.column_names:
        assert a.rows[name] == b.rows[name], name


@pytest.mark.parametrize("dataset", ["ml100k", "bookshop"])
def test_columnar_split_equals_leave_one_out(dataset, request):
    data = request.getfixturevalue(dataset)
    old = leave_one_out(data.histories())
    new = columnar_split(data)
    assert list(new.train.items()) == list(old.train.items())
    assert list(new.valid) == old.valid and list(new.test) == old.test
    assert new.too_short == old.too_short and new.kind == old.kind
    assert new.valid[3:5] == old.valid[3:5] and new.test[-1] == old.test[-1]
    assert new.to_split().train == old.train


@pytest.mark.parametrize(("dataset", "settings"), [
    ("ml100k", {"max_windows": 3}),
    ("ml100k", {"max_windows": None, "context": 2, "window": 8}),
    ("bookshop", {"max_windows": 2, "title_alignment": True}),
])
def test_columnar_rows_equal_dict_rows(dataset, settings, request, tiny_llama_dir, tmp_path):
    data = request.getfixturevalue(dataset)
    if dataset == "ml100k":  # the first 100 users (histories of 20 to 700 items) keep the dict builder quick
        from llmrec.recipes.common import subset_users

        data = subset_users(data, 100)
    plm = _plm(data, tiny_llama_dir)
    split = columnar_split(data)
    old = build_genrec_rows(plm, leave_one_out(data.histories()).train, **settings)
    first = build_genrec_rows(plm, split.train, cache=tmp_path, **settings)
    _same(first, old)
    assert not first.cached and first.rows.cache_files  # memory-mapped Arrow files, not an in-memory table
    again = build_genrec_rows(plm, columnar_split(data).train, cache=tmp_path, **settings)
    assert again.cached and [f["filename"] for f in again.rows.cache_files] == [
        f["filename"] for f in first.rows.cache_files]
    _same(again, old)
    two = build_genrec_rows(plm, split.train, num_proc=2, cache=False, **settings)  # 2 workers, in memory
    _same(two, old)


def test_cache_key_follows_inputs(ml100k, tiny_llama_dir, tmp_path):
    from llmrec.recipes.common import subset_users

    data = subset_users(ml100k, 40)
    plm = _plm(data, tiny_llama_dir)
    base = build_genrec_rows(plm, columnar_split(data).train, max_windows=1, cache=tmp_path)
    # another window setting, another SID table, another subset of users: each builds afresh and matches
    for other_plm, other_data, kw in ((plm, data, {"max_windows": 2}),
                                      (_plm(data, tiny_llama_dir, seed=1), data, {"max_windows": 1}),
                                      (plm, subset_users(ml100k, 30), {"max_windows": 1})):
        rows = build_genrec_rows(other_plm, columnar_split(other_data).train, cache=tmp_path, **kw)
        assert not rows.cached
        _same(rows, build_genrec_rows(other_plm, leave_one_out(other_data.histories()).train, **kw))
    assert build_genrec_rows(plm, columnar_split(data).train, max_windows=1, cache=tmp_path).cached
    assert base.rows["input_ids"] == build_genrec_rows(plm, columnar_split(data).train, max_windows=1,
                                                       cache=False).rows["input_ids"]


def test_unknown_item_names_the_user(ml100k, tiny_llama_dir, tmp_path):
    from llmrec.errors import DataError
    from llmrec.recipes.common import subset_users

    data = subset_users(ml100k, 20)
    split = columnar_split(data)
    first_user, history = next(iter(split.train.items()))
    plm = _plm(data, tiny_llama_dir, drop=history.item_ids[0])  # a SID table without that item
    with pytest.raises(DataError, match=f"not in the SID table.*{first_user}|{first_user}.*not in the SID table"):
        build_genrec_rows(plm, split.train, cache=tmp_path)


@pytest.mark.parametrize(("ratings", "windows"), [(False, "last"), (True, "all")])
def test_sasrec_windows_equal_training_windows(ml100k, ratings, windows, tmp_path):
    from llmrec.users.pretrain import training_windows
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig
    from llmrec.users.windows import sasrec_windows

    cfg = SequenceEncoderConfig(n_items=len(ml100k.items), d_model=8, n_layers=1, n_heads=1, max_len=30,
                                n_rating_levels=5 if ratings else 0)
    model = SequenceEncoder(cfg, ml100k.item_ids)
    split = columnar_split(ml100k)
    old = training_windows(model, list(leave_one_out(ml100k.histories()).train.values()), windows)
    new = sasrec_windows(model, split.train, windows, cache=tmp_path)
    assert list(zip(new["items"], new["levels"], strict=True)) == [(list(a), list(b)) for a, b in old]
    assert sasrec_windows(model, split.train, windows, cache=tmp_path)["items"] == new["items"]  # from the cache
    two = sasrec_windows(model, split.train, windows, num_proc=2, cache=False)
    assert two["items"] == new["items"] and two["levels"] == new["levels"]


@pytest.mark.parametrize("fast", [False, True])
def test_pretrain_on_columnar_split_equals_object_split(ml100k, fast, tmp_path, monkeypatch):
    """pretrain() cuts a ColumnarSplit's windows with sasrec_windows (no per-interaction objects): the trained
    weights and the validation curve equal those of the same run over the Python-object split."""
    import torch

    from llmrec.recipes.common import subset_users
    from llmrec.users.pretrain import PretrainConfig, pretrain, window_tensors
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig
    from llmrec.users.windows import sasrec_windows, window_arrays

    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path))
    data = subset_users(ml100k, 60)
    cfg = SequenceEncoderConfig(n_items=len(data.items), d_model=16, n_layers=1, n_heads=1, max_len=20,
                                n_rating_levels=5)
    columnar = columnar_split(data)
    plain = leave_one_out(data.histories())
    probe = SequenceEncoder(cfg, data.item_ids)
    arrays = window_arrays(sasrec_windows(probe, columnar.train, "all", cache=False))
    for got, want in zip(arrays, window_tensors(probe, list(plain.train.values()), "all"), strict=True):
        assert torch.equal(got, want)
    runs = []
    for split in (columnar, plain):
        torch.manual_seed(0)
        model = SequenceEncoder(cfg, data.item_ids)
        runs.append(pretrain(model, split, PretrainConfig(max_epochs=2, patience=2, batch_size=16, windows="all",
                                                          fast=fast)))
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    assert runs[0].best_valid == runs[1].best_valid
    for name, tensor in runs[0].model.state_dict().items():
        assert torch.equal(tensor, runs[1].model.state_dict()[name]), name
    assert any((tmp_path / "rows" / "sasrec").iterdir())  # built through the cache


def test_mapped_qa_rows_equal_the_loop(tiny_llama, tmp_path):
    from llmrec.training.qa import qa_rows

    tok = tiny_llama.tokenizer
    prompts = [f"Which genre does user {k} like?" for k in range(9)] + ["Año?"]
    answers = ["Drama", "Comedy", "1995", "no", "yes", "Film-Noir", "x" * 30, "Sci-Fi", "Horror", "2001"]
    items = [[1, 2][: 1 + k % 2] for k in range(10)]
    loop = qa_rows(prompts, answers, tok, user_items=items)
    for kw in ({"num_proc": 2}, {"cache": str(tmp_path)}, {"cache": str(tmp_path)}):
        mapped = qa_rows(prompts, answers, tok, user_items=items, **kw)
        assert mapped.features == loop.features
        assert mapped.to_dict() == loop.to_dict()
