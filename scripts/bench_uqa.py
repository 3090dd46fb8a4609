"""Personalized QA on MovieLens-100k: no history vs history-as-text vs soft prompts (k = 1, 4, 16).

    .venv/bin/python scripts/bench_uqa.py --out eval/results/uqa_ml100k.json

Every variant fine-tunes the same SmolLM2-135M + LoRA preset on the same UQA train questions (answers computed
from the data) with the same step budget; soft-prompt variants also train a SASRec-style user encoder
(pretrained on next-item prediction) and the projector. Reports accuracy per task/family and mean prompt tokens.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import random
import tempfile
import time
from collections import defaultdict

import torch

from llmrec.cli_args import add_hardware_args, apply_hardware_args
from llmrec.data import leave_one_out, load_dataset
from llmrec.evaluation.ranking import summaries
from llmrec.io import write_json_atomic
from llmrec.items.encoders import encode_items
from llmrec.lm.loading import load_causal_lm
from llmrec.lm.personal import PersonalLM, PersonalLMConfig, with_lora
from llmrec.lm.soft_prompt import USER_TOKEN, build_soft_prompt_lm, text_token_ids
from llmrec.tasks.uqa import (
    build_uqa,
    genre_line,
    item_line,
    item_title,
    majority_baseline,
    uqa_accuracy,
    uqa_prompt,
)
from llmrec.training.qa import QATrainConfig, generate_answers, qa_rows, train_qa
from llmrec.training.text_align import TextAlignConfig, align_to_text
from llmrec.users.pretrain import PretrainConfig, evaluate_examples, train_sequence_model
from llmrec.users.sequence import SequenceEncoderConfig

RECENT_WINDOW = 10  # "recent" in the questions, and the profile pooling's recent slot


def per_task_sample(examples, n, seed):
    by_task = defaultdict(list)
    for ex in examples:
        by_task[ex.task].append(ex)
    rng = random.Random(seed)
    return [ex for task in sorted(by_task) for ex in rng.sample(by_task[task], min(n, len(by_task[task])))]


def examples_by_task(preds, examples, n=3):
    """The first n (prediction, gold answer) pairs of each task."""
    out = defaultdict(list)
    for pred, ex in zip(preds, examples, strict=True):
        if len(out[ex.task]) < n:
            out[ex.task].append((pred, ex.answer))
    return dict(out)


def lora_model(k: int, encoder, max_len: int, projector: str, item_texts: list[str], soft_llm: str = "lora",
               dtype: str = "auto"):
    """k = 0: the LLM + LoRA (text styles); k > 0: a soft-prompt model over a copy of the pretrained encoder,
    with LoRA or (``soft_llm="frozen"``) the LLM frozen: UQABench's alignment stage."""
    if k:
        return build_soft_prompt_lm(copy.deepcopy(encoder), k, max_items=max_len, projector=projector,
                                    anchor_texts=item_texts if projector == "vocab" else (),
                                    adapter=None if soft_llm == "frozen" else "lora", dtype=dtype)
    llm, tok = load_causal_lm(dtype=dtype)
    llm = with_lora(llm, "lora")
    return llm, tok, llm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="eval/results/uqa_ml100k.json")
    p.add_argument("--train-per-task", type=int, default=150)
    p.add_argument("--test-per-task", type=int, default=50)
    p.add_argument("--ks", default="1,4,16")
    p.add_argument("--text-items", type=int, default=15, help="history items shown as text / fed to the encoder")
    p.add_argument("--soft-items", type=int, default=0,
                   help="history items the user encoder sees (0 = --text-items, the same items the text prompt shows)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--user-lr", type=float, default=None,
                   help="learning rate of the user encoder + projector in QA training (default: --lr; 0 = frozen, "
                   "e.g. to keep the text-aligned soft tokens as they are)")
    p.add_argument("--projector", choices=["mlp", "vocab"], default="vocab",
                   help="soft tokens: free MLP vectors, or mixtures of the LLM's embeddings of catalogue words")
    p.add_argument("--item-vectors", choices=["none", "minilm"], default="minilm",
                   help="feed frozen MiniLM item text vectors (title, year, genres) to the user encoder")
    p.add_argument("--encoder-epochs", type=int, default=40)
    p.add_argument("--soft-llm", choices=["lora", "frozen"], default="lora",
                   help="soft variants: train LoRA with the user side, or keep the LLM frozen (alignment stage)")
    p.add_argument("--text-align-epochs", type=int, default=0,
                   help="soft variants: epochs of text alignment before QA training (0 = off; needs --projector vocab)")
    p.add_argument("--anchor-text", choices=["items", "genres"], default="items",
                   help="vocab projector anchors and text-alignment targets: each item's title + genres, or its "
                   "genre words only (sharper mixtures for the genre and interest questions)")
    p.add_argument("--pooling", choices=["mean", "profile"], default="mean",
                   help="soft slots: k chronological chunks of the history, or a profile (slot 0 = the whole "
                   "history, slot 1 = the last 10 items, the rest = the last k - 2 items one each)")
    p.add_argument("--align-sharpness", type=float, default=1.0,
                   help="text alignment: power on each slot's word counts (> 1 leans to its commonest words)")
    p.add_argument("--worked-answers", action="store_true",
                   help="train and ask for worked answers where a task has one (interest shift: 'Drama, Comedy: "
                   "yes', both favourites computed from the data); scored on the final answer")
    p.add_argument("--variants", default="none,text,soft")
    p.add_argument("--save-model", help="save the --save-variant model here as a PersonalLM directory "
                   "(llmrec answer --model DIR answers from its soft prompt)")
    p.add_argument("--save-variant", default="soft_k4")
    p.add_argument("--seed", type=int, default=0)
    add_hardware_args(p)
    args = p.parse_args()
    apply_hardware_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data = load_dataset("ml-100k")
    split = leave_one_out(data.histories())
    # By default the encoder sees exactly the items the text prompt shows; --soft-items lets it see more (a longer
    # history costs the soft prompt no extra LLM tokens, the text prompt ~17 tokens per item).
    max_len = args.soft_items or args.text_items

    t0 = time.perf_counter()
    vectors = (torch.from_numpy(encode_items(data, show_progress=False)) if args.item_vectors == "minilm" else None)
    enc_cfg = SequenceEncoderConfig(n_items=len(data.items), d_model=64, n_layers=2, n_heads=2, max_len=max_len,
                                    dropout=0.2, pooling=args.pooling, recent_window=RECENT_WINDOW,
                                    item_vector_dim=0 if vectors is None else int(vectors.shape[1]))
    pre = train_sequence_model(split, data.item_ids, enc_cfg,
                               PretrainConfig(max_epochs=args.encoder_epochs, patience=5, seed=args.seed), vectors)
    encoder_report = {"test": summaries(evaluate_examples(pre.model, split.test)),
                      "best_epoch": pre.best_epoch, "train_seconds": round(time.perf_counter() - t0, 1)}
    train = per_task_sample(build_uqa(data, split="train", seed=args.seed, recent_window=RECENT_WINDOW),
                            args.train_per_task, args.seed)
    test = per_task_sample(build_uqa(data, split="test", seed=args.seed, recent_window=RECENT_WINDOW),
                           args.test_per_task, args.seed)
    line = item_line if args.anchor_text == "items" else genre_line
    item_texts = [line(data.items[i]) for i in data.item_ids]  # index i + 1 <-> item_texts[i]

    def items_of(examples):
        return [pre.model.item_indices(ex.context.item_ids[-max_len:]) for ex in examples]

    variants = []
    for name in args.variants.split(","):
        variants += [("soft", int(k)) for k in args.ks.split(",")] if name == "soft" else [(name, 0)]
    def write_results() -> None:
        out = {
            "command": "python scripts/bench_uqa.py " + " ".join(f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items()),
            "machine": {"cpu_cores": 2, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                        "torch": torch.__version__, "note": "shared machine: other jobs ran concurrently"},
            "model": "SmolLM2-135M-Instruct (bf16) + LoRA preset 'lora'",
            "train_questions": len(train), "test_questions": len(test),
            "majority_baseline": majority_baseline(train, test),
            "encoder_pretraining": encoder_report,
            "variants": results,
        }
        base = results.get("none", {}).get("mean_prompt_tokens")
        if base is not None:  # tokens spent on the user (history text or soft tokens + their framing)
            for res in results.values():
                res["user_tokens"] = res["mean_prompt_tokens"] - base
        write_json_atomic(args.out, out)

    results: dict = {}
    for style, k in variants:
        label = f"soft_k{k}" if k else style
        torch.manual_seed(args.seed)
        model, tok, llm = lora_model(k, pre.model, max_len, args.projector, item_texts, args.soft_llm, args.dtype)

        def rows_for(examples, model_tok=tok, style=style, k=k):
            prompts = [uqa_prompt(ex, style, data=data, max_items=args.text_items, user=USER_TOKEN * k if k else None,
                                  worked=args.worked_answers) for ex in examples]
            return qa_rows(prompts, [ex.target(args.worked_answers) for ex in examples], model_tok,
                           user_items=items_of(examples) if k else None)

        align_report = None
        if k and args.text_align_epochs:
            histories = [pre.model.item_indices(h.item_ids) for h in split.train.values()]
            align_report = align_to_text(model, histories, text_token_ids(tok, item_texts),
                                         TextAlignConfig(epochs=args.text_align_epochs, seed=args.seed,
                                                         sharpness=args.align_sharpness))
        if k and args.user_lr == 0:
            model.freeze_user_modules()
        train_rows, test_rows = rows_for(train), rows_for(test)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = QATrainConfig(output_dir=tmp, epochs=args.epochs, learning_rate=args.lr,
                                user_learning_rate=args.user_lr or None, seed=args.seed)
            report = train_qa(model, train_rows, tok.pad_token_id, cfg)
        model.eval()
        if k:
            def gen(b, n, model=model, tok=tok):
                return model.generate(b["input_ids"], b["attention_mask"], b["user_item_idx"], max_new_tokens=n,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        else:
            def gen(b, n, llm=llm, tok=tok):
                out = llm.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], max_new_tokens=n,
                                   do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id)
                return out[:, b["input_ids"].shape[1]:]
        preds, sec = generate_answers(gen, test_rows, tok)
        acc = uqa_accuracy(preds, test)
        results[label] = {"accuracy": acc, "mean_prompt_tokens": sum(test_rows["prompt_len"]) / len(test_rows),
                          "train": {k2: v for k2, v in report.items() if k2 != "loss_curve"},
                          "loss_first_last": [report["loss_curve"][0][1], report["loss_curve"][-1][1]]
                          if report["loss_curve"] else None,
                          "text_align": ({k2: v for k2, v in align_report.items() if k2 != "curve"}
                                         if align_report else None),
                          "answer_seconds_per_question": sec, "examples": examples_by_task(preds, test)}
        if args.save_model and label == args.save_variant:
            titles = {i: item_title(it) for i, it in data.items.items()}
            plm = PersonalLM(llm, tok, None, titles, PersonalLMConfig(base_model="smollm2-135m", adapter="lora", dtype=args.dtype),
                             soft=model if k else None, soft_item_ids=data.item_ids if k else None)
            plm.save(args.save_model)
        print(label, json.dumps({"macro": acc["macro"], "overall": acc["overall"], "tokens": results[label]["mean_prompt_tokens"]}),
              flush=True)
        write_results()  # after every variant: a long run keeps what it has measured


if __name__ == "__main__":
    main()
