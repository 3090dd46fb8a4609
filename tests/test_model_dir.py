"""Self-describing model directories (dataset, dtype), reusing a built SID table (``--sids``), SASRec and
popularity in `llmrec eval run`, and Trainer settings that pass through the training configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrec.cli import main
from llmrec.data.builder import DatasetBuilder
from llmrec.data.schema import Vocabulary
from llmrec.errors import ConfigError, DataError
from llmrec.items.build import SemanticIdConfig, load_built_semantic_ids
from llmrec.items.semantic_ids import SemanticIds
from llmrec.lm import model_dir
from llmrec.lm.personal import PersonalLM, PersonalLMConfig

SHOP = "shop.jsonl"


def _bookshop(n_items: int = 12, extra_item: bool = False):
    """A tiny bookshop (not MovieLens): ISBN items with a category, customers C19990.., ratings 1-5."""
    b = DatasetBuilder("bookshop", (1.0, 5.0), category_fields=("category",),
                       vocabulary=Vocabulary("book", "books", "bought", "category", "categories"))
    n = n_items + int(extra_item)
    for i in range(n):
        b.add_item(f"978{i:07d}", f"Book number {i}", {"category": ["Fiction", "History"][i % 2]}, path=SHOP,
                   record=i)
    rng = np.random.default_rng(0)
    for u in range(6):
        start = int(rng.integers(0, n_items))
        for t in range(6):
            b.add_interaction(f"C{19990 + u}", f"978{(start + t) % n_items:07d}", 1_600_000_000 + t * 86400,
                              float(1 + (u + t) % 5), None, path=SHOP, record=u * 6 + t)
    return b.build()


def _random_sids(item_ids, seed: int = 0, **kw) -> SemanticIds:
    rng = np.random.default_rng(seed)
    quantized = np.stack([rng.integers(0, 4, len(item_ids)), rng.integers(0, 3, len(item_ids))], axis=1)
    return SemanticIds.from_quantized(list(item_ids), quantized, (4, 3), **kw)


@pytest.fixture
def bookshop(monkeypatch):
    """The bookshop, loadable by name through llmrec.data.load_dataset (as a built-in or configured dataset
    would be), so a saved model can find it again; every other name loads as before."""
    import llmrec.data

    data = _bookshop()
    real = llmrec.data.load_dataset
    calls = []

    def load(spec="ml-100k", **kw):
        calls.append(spec)
        return data if spec == "bookshop" else real(spec, **kw)

    monkeypatch.setattr(llmrec.data, "load_dataset", load)
    data.calls = calls
    return data


@pytest.fixture
def shop_model(tiny_llama_dir, bookshop, tmp_path):
    """A tiny PersonalLM trained two steps on the bookshop and saved with its dataset."""
    from llmrec.data.splits import leave_one_out
    from llmrec.training.genrec import GenRecTrainConfig, train_genrec

    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=4)
    plm = PersonalLM.create(_random_sids(bookshop.items), bookshop.items, cfg)
    split = leave_one_out(bookshop.histories())
    train_genrec(plm, split.train, split.valid, GenRecTrainConfig(
        output_dir=str(tmp_path / "ckpt"), max_steps=2, batch_size=4, eval_users=2, eval_beams=3, logging_steps=1))
    plm.save(tmp_path / "shop-model", data=bookshop)
    return tmp_path / "shop-model"


def test_saved_model_records_its_dataset_and_dtype(shop_model, bookshop):
    manifest = json.loads((shop_model / model_dir.MANIFEST_FILE).read_text())
    assert manifest["dtype"] == "fp32" and manifest["parts"] == ["sids"]
    record = manifest["dataset"]
    assert record["name"] == "bookshop" and record["spec"] == "bookshop" and record["config"] is None
    assert (record["users"], record["items"]) == (6, 12)
    assert not (shop_model / model_dir.DATA_CONFIG_FILE).exists()  # built in Python: no DatasetConfig
    assert (shop_model / "sids" / "semantic_ids.json").is_file()
    plm = PersonalLM.load(shop_model, dtype=None)
    assert plm.dataset == record
    assert plm.load_dataset() is bookshop


def test_recommend_answer_profile_need_only_the_model(shop_model, bookshop, capsys):
    args = ["recommend", "--model", str(shop_model), "--user", "C19990", "-k", "3", "--json"]
    assert main(args) == 0
    recs = json.loads(capsys.readouterr().out)["recommendations"]
    own = set(bookshop.histories()["C19990"].item_ids)
    assert len(recs) == 3 and all(r["item_id"] in bookshop.items and r["item_id"] not in own for r in recs)
    assert bookshop.calls == ["bookshop"]  # the recorded dataset, not ml-100k
    assert main(["profile", "--model", str(shop_model), "--user", "C19991", "--max-items", "3"]) == 0
    assert main(["answer", "--model", str(shop_model), "--user", "C19991", "Which category?"]) == 0
    assert capsys.readouterr().out.strip()


def test_data_flag_overrides_and_old_directories_fall_back_to_ml100k(shop_model, bookshop, capsys):
    (shop_model / model_dir.MANIFEST_FILE).unlink()  # a directory saved before model.json existed
    plm = PersonalLM.load(shop_model)
    assert plm.dataset is None and model_dir.load_model_dataset(shop_model) is None
    assert main(["recommend", "--model", str(shop_model), "--user", "C19990"]) == 2
    err = capsys.readouterr().err
    assert "unknown user 'C19990' (943 users)" in err and "ml-100k" in err
    assert main(["recommend", "--model", str(shop_model), "--data", "bookshop", "--user", "C19990", "-k", "2"]) == 0


def test_folder_dataset_reloads_from_its_folder(tiny_llama_dir, ml_folder, tmp_path, capsys):
    from llmrec.data import load_dataset

    folder = ml_folder("grouplens")
    data = load_dataset(folder)
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=4)
    PersonalLM.create(_random_sids(data.items), data.items, cfg).save(tmp_path / "m", data=data)
    record = json.loads((tmp_path / "m" / model_dir.MANIFEST_FILE).read_text())["dataset"]
    # load_dataset recorded the folder in a DatasetConfig (data_config.json beside the manifest)
    assert record["config"] == model_dir.DATA_CONFIG_FILE
    saved = json.loads((tmp_path / "m" / model_dir.DATA_CONFIG_FILE).read_text())
    assert saved["format"] == "movielens" and saved["path"] == str(folder.resolve())
    assert main(["recommend", "--model", str(tmp_path / "m"), "--user", "10", "-k", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["recommendations"]) == 1


def test_soft_prompt_model_answers_with_only_the_model(tiny_llama_dir, bookshop, tmp_path):
    from peft import LoraConfig, get_peft_model

    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.soft_prompt import SequenceUserEncoder, SoftPromptConfig, SoftPromptModel, add_user_token
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    torch.manual_seed(0)
    llm, tok = load_causal_lm(tiny_llama_dir, dtype="fp32")
    uid = add_user_token(tok, llm)
    llm = get_peft_model(llm, LoraConfig(r=2, target_modules=["q_proj"]))
    ids = bookshop.item_ids
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=len(ids), d_model=16, n_heads=2,
                                                                    max_len=8), ids), 1)
    soft = SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=1, train_llm=True, max_items=8))
    titles = {i: it.title for i, it in bookshop.items.items()}
    plm = PersonalLM(llm, tok, None, titles, PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32"),
                     soft=soft, soft_item_ids=ids)
    plm.remember_dataset(bookshop)
    plm.save(tmp_path / "soft")
    manifest = json.loads((tmp_path / "soft" / model_dir.MANIFEST_FILE).read_text())
    assert manifest["parts"] == ["soft_prompt"] and manifest["dataset"]["name"] == "bookshop"
    assert main(["answer", "--model", str(tmp_path / "soft"), "--user", "C19993", "--options", "Fiction,History",
                 "--answer-kind", "category", "Which category?"]) == 0
    assert bookshop.calls == ["bookshop"]  # a random tiny model may answer with an empty line


def test_dataset_config_is_saved_beside_the_manifest(tmp_path):
    config = {"name": "shop", "interactions": {"path": "/data/shop.csv"}, "category": ["category"]}
    record = {"name": "shop", "spec": None, "config": config, "source": "/data/shop.csv", "users": 2, "items": 3,
              "interactions": 4}
    model_dir.write_model_manifest(tmp_path, dtype="bf16", parts=["sids"], dataset=record)
    assert json.loads((tmp_path / model_dir.DATA_CONFIG_FILE).read_text()) == config
    saved = json.loads((tmp_path / model_dir.MANIFEST_FILE).read_text())
    assert saved["dataset"]["config"] == model_dir.DATA_CONFIG_FILE and saved["dtype"] == "bf16"
    assert model_dir.read_model_manifest(tmp_path)["dataset"] == record
    (tmp_path / model_dir.DATA_CONFIG_FILE).write_text("{not json")
    with pytest.raises(DataError, match="data_config.json"):
        model_dir.read_model_manifest(tmp_path)


def test_records_that_cannot_reload_say_pass_data(ml100k):
    record = {"name": "my-export", "spec": "my-export", "config": None, "items": 3}
    with pytest.raises(ConfigError, match="pass --data"):
        model_dir.load_dataset_from_record(record, where="runs/m")
    with pytest.raises(ConfigError, match="pass --data"):
        model_dir.load_dataset_from_record({"name": None, "spec": None, "config": None})
    # the offline copy is recorded by name, so the directory works on any machine
    assert model_dir.dataset_spec(ml100k) == "ml-100k"


# ---- --sids: a built table reused -------------------------------------------------------------------------


def test_built_sid_table_is_reused_in_catalogue_order(tmp_path):
    data = _bookshop()
    ids = list(data.items)[::-1]  # the table lists items in another order
    sids = _random_sids(ids, config=SemanticIdConfig().to_dict(), meta={"dataset": "bookshop"})
    sids.save(tmp_path / "sids")
    loaded, config = load_built_semantic_ids(tmp_path / "sids", data)
    assert loaded.item_ids == list(data.items) and isinstance(config, SemanticIdConfig)
    assert all(loaded.codes_for(i) == sids.codes_for(i) for i in ids)
    assert loaded.codebook_sizes == sids.codebook_sizes


def test_mismatched_sid_table_is_refused_naming_the_file_and_item(tmp_path):
    data = _bookshop()
    _random_sids(list(data.items), config=SemanticIdConfig().to_dict(), meta={"dataset": "bookshop"}).save(
        tmp_path / "sids")
    bigger = _bookshop(extra_item=True)
    with pytest.raises(DataError, match=r"semantic_ids.json.*record 9780000012.*1 of 13 catalogue item\(s\)"):
        load_built_semantic_ids(tmp_path / "sids", bigger)
    smaller = _bookshop(n_items=11)
    with pytest.raises(DataError, match=r"semantic_ids.json.*9780000011.*not in the catalogue.*built for"):
        load_built_semantic_ids(tmp_path / "sids", smaller)
    with pytest.raises(DataError, match="llmrec items build"):
        load_built_semantic_ids(tmp_path, data)


# ---- SASRec and popularity in `llmrec eval run` ----------------------------------------------------------


def _sasrec_dir(item_ids, path):
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    torch.manual_seed(0)
    SequenceEncoder(SequenceEncoderConfig(n_items=len(item_ids), d_model=16, n_heads=2, max_len=16),
                    list(item_ids)).save(path)
    return path


def test_sasrec_model_ranks_unseen_items_by_its_scores(tmp_path):
    from llmrec.evaluation.models import MODEL_KINDS, SasrecModel, load_model
    from llmrec.users.pretrain import score_histories

    data = _bookshop()
    model = load_model(f"sasrec:{_sasrec_dir(data.items, tmp_path / 'sas')}", dtype="fp32")
    assert isinstance(model, SasrecModel) and set(MODEL_KINDS) >= {"sasrec", "baseline"}
    assert model.supports("rank_items") and not model.supports("regress")
    assert isinstance(load_model(str(tmp_path / "sas")), SasrecModel)  # its folder is recognised without a prefix
    hist = list(data.histories()["C19990"].item_ids)
    top = model.recommend([hist], 4)[0]
    scores = score_histories(model.encoder, [tuple(hist)])[0]
    unseen = [i for i in np.argsort(-scores, kind="stable") if model.encoder.item_ids[i] not in hist]
    assert top == [model.encoder.item_ids[i] for i in unseen[:4]]
    with pytest.raises(ConfigError, match="not in this model's catalogue"):
        model.recommend([["nope"]], 3)


def test_eval_run_puts_llm_sasrec_and_popularity_side_by_side(tiny_llama_dir, ml100k, tmp_path, capsys):
    item_ids = list(ml100k.items)
    rng = np.random.default_rng(0)
    codes = rng.permutation(16 ** 3)[: len(item_ids)]
    sids = SemanticIds.from_quantized(item_ids, np.stack([codes // 256, codes // 16 % 16, codes % 16], 1),
                                      (16, 16, 16))
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=8)
    PersonalLM.create(sids, ml100k.items, cfg).save(tmp_path / "plm", data=ml100k)
    sas = _sasrec_dir(item_ids, tmp_path / "sas")
    out = tmp_path / "eval"
    assert main(["eval", "run", "--model", str(tmp_path / "plm"), "--model", f"sasrec:{sas}", "--model",
                 "baseline:popularity", "--tasks", "ml100k_next_item,ml100k_rating", "--limit", "4",
                 "--retriever", "none", "--out", str(out), "--n-boot", "0", "--no-progress", "--no-report"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["models"] == [str(tmp_path / "plm"), f"sasrec:{sas}", "baseline:popularity"]
    item = res["tasks"]["ml100k_next_item"]["variants"]
    assert set(item) == {"no-profile", f"sasrec:{sas}", "baseline:popularity"}
    for row in item.values():
        assert 0 <= row["metrics"]["recall@10"]["value"] <= 1
    preds = json.loads((out / "ml100k_next_item" / f"sasrec:{str(sas).replace('/', '_')}.predictions.json")
                       .read_text())["golds"]
    assert len(preds) == 4 and all(len(p["output"].split()) == 10 for p in preds)
    # SASRec and popularity rank items only: the rating task runs the LLM alone
    assert set(res["tasks"]["ml100k_rating"]["variants"]) == {"no-profile/score", "no-profile/score+calib"}


# ---- Trainer settings -------------------------------------------------------------------------------------


def test_qa_trainer_settings_pass_through(tiny_llama, tmp_path):
    from llmrec.lm.soft_prompt import (
        USER_TOKEN,
        SequenceUserEncoder,
        SoftPromptConfig,
        SoftPromptModel,
        add_user_token,
    )
    from llmrec.training.qa import QATrainConfig, qa_rows, train_qa
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=4, d_model=16, n_heads=2, max_len=4)), 1)
    model = SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=1))
    rows = qa_rows([f"User {USER_TOKEN}. Genre?"] * 8, ["comedy"] * 8, tok, user_items=[[1, 2]] * 8)
    cfg = QATrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=2, grad_accum=2, logging_steps=1,
                        save_steps=1, report_to=())
    report = train_qa(model, rows, tok.pad_token_id, cfg)
    assert report["steps"] == 2 and len(report["loss_curve"]) == 2  # a log line every step
    args = torch.load(tmp_path / "run" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert (args.gradient_accumulation_steps, args.save_steps, args.logging_steps) == (2, 1, 1)
    assert args.report_to == []


def test_genrec_trainer_settings_are_checked():
    from llmrec.training.genrec import GenRecTrainConfig

    cfg = GenRecTrainConfig.from_dict({"eval_steps": 5, "save_steps": 10, "report_to": ["tensorboard"],
                                       "grad_accum": 4, "logging_steps": 2})
    assert cfg.report_to == ("tensorboard",)
    with pytest.raises(ConfigError, match="multiple of eval_steps"):
        GenRecTrainConfig(eval_steps=4, save_steps=6)
    with pytest.raises(ConfigError, match="logging_steps"):
        GenRecTrainConfig(logging_steps=0)
