"""Personalized-QA training rows, collation, a tiny soft-prompt training run with resume, and answering."""

from __future__ import annotations

import torch

from llmrec.lm.soft_prompt import (
    USER_TOKEN,
    SequenceUserEncoder,
    SoftPromptConfig,
    SoftPromptModel,
    add_user_token,
)
from llmrec.training.qa import QACollator, QATrainConfig, generate_answers, qa_rows, train_qa
from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig


def test_rows_put_the_loss_on_the_answer_only(tiny_llama):
    tok = tiny_llama.tokenizer
    rows = qa_rows(["Which genre?", "Which year?"], ["Drama", "1995"], tok, user_items=[[1, 2], [3]])
    for r, answer in zip(rows, ["Drama", "1995"], strict=True):
        labelled = [t for t in r["labels"] if t != -100]
        assert tok.decode(labelled[:-1]) == answer and labelled[-1] == tok.eos_token_id
        assert r["labels"][: r["prompt_len"]] == [-100] * r["prompt_len"]
    right = QACollator(tok.pad_token_id)([rows[0], rows[1]])
    left = QACollator(tok.pad_token_id, left=True)([rows[0], rows[1]])
    assert right["user_item_idx"].tolist() == [[1, 2], [3, 0]]
    assert "labels" not in left and left["attention_mask"][:, -1].tolist() == [1, 1]  # prompts end together
    assert left["input_ids"].shape[1] == max(rows["prompt_len"])


def test_tiny_soft_prompt_qa_run_learns_resumes_and_answers(tiny_llama, tmp_path, capsys):
    torch.manual_seed(0)
    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=6, d_model=16, n_heads=2, max_len=4,
                                                                    pooling="mean")), 1)
    model = SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=1))
    # the answer depends only on the user's items, so only the soft prompt can carry it
    users = [[1, 2], [3, 4], [5, 6], [1, 3]] * 4
    answers = ["comedy" if u[0] in (1, 5) else "horror" for u in users]
    rows = qa_rows([f"User {USER_TOKEN}. Favourite genre?"] * len(users), answers, tok, user_items=users)
    cfg = QATrainConfig(output_dir=str(tmp_path / "run"), epochs=8, learning_rate=3e-3, batch_size=8, logging_steps=1)
    report = train_qa(model, rows, tok.pad_token_id, cfg)
    losses = [loss for _, loss in report["loss_curve"]]
    assert report["steps"] == 16 and losses[-1] < losses[0]
    # off a terminal our progress lines replace the Trainer's raw metric dicts on stdout (PrinterCallback)
    assert "{'loss'" not in capsys.readouterr().out
    again = train_qa(model, rows, tok.pad_token_id, cfg)
    assert again["resumed_from"] is not None
    model.eval()

    def gen(batch, n):
        return model.generate(batch["input_ids"], batch["attention_mask"], batch["user_item_idx"], max_new_tokens=n,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    preds, seconds = generate_answers(gen, rows.select(range(4)), tok, batch_size=4, max_new_tokens=3)
    assert len(preds) == 4 and seconds > 0


def test_user_learning_rate_puts_encoder_and_projector_in_their_own_group(tiny_llama):
    from peft import LoraConfig, get_peft_model

    from llmrec.training.qa import _optimizer

    llm, tok = tiny_llama.model, tiny_llama.tokenizer
    uid = add_user_token(tok, llm)
    llm = get_peft_model(llm, LoraConfig(r=2, target_modules=["q_proj"]))
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=6, d_model=16, n_heads=2, max_len=4)), 1)
    model = SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=1, train_llm=True))
    assert _optimizer(model, QATrainConfig(learning_rate=1e-3)) is None  # one rate: the Trainer's own AdamW
    opt = _optimizer(model, QATrainConfig(learning_rate=1e-3, user_learning_rate=5e-3))
    user, lora = opt.param_groups
    assert user["lr"] == 5e-3 and lora["lr"] == 1e-3
    user_ids = {id(p) for p in user["params"]}
    assert {id(p) for p in model.projector.parameters()} <= user_ids
    assert {id(p) for p in enc.parameters()} <= user_ids
    named = dict(model.named_parameters())
    assert all(n.startswith("llm.") and "lora" in n for n, p in named.items() if id(p) in {id(q) for q in lora["params"]})
