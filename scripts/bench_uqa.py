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
import tempfile
import time
from collections import defaultdict

from llmrec.recipes.soft_prompt import (
    SoftPromptSection,
    evaluate_soft_prompt,
    sample_per_task,
    train_soft_prompt,
)

RECENT_WINDOW = 10  # "recent" in the questions, and the profile pooling's recent slot


def examples_by_task(preds, examples, n=3):
    """The first n (prediction, gold answer) pairs of each task."""
    out = defaultdict(list)
    for pred, ex in zip(preds, examples, strict=True):
        if len(out[ex.task]) < n:
            out[ex.task].append((pred, ex.answer))
    return dict(out)


def lora_model(dtype: str):
    """The LLM + LoRA for the text styles (the soft variants are llmrec.recipes.soft_prompt's)."""
    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import with_lora

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
    p.add_argument("--data", default="ml-100k", help="dataset name or config file")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="LLM dtype (auto = bf16 only where the hardware runs it natively)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default; use 1 on a shared CPU)")
    args = p.parse_args()
    # heavy imports after parsing, so --help answers at once
    import torch

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.evaluation.ranking import summaries
    from llmrec.hardware import machine_facts, resolve_dtype
    from llmrec.io import write_json_atomic
    from llmrec.items.encoders import encode_items
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.tasks.uqa import build_uqa, item_title, majority_baseline, uqa_accuracy, uqa_prompt
    from llmrec.training.qa import QATrainConfig, generate_answers, qa_rows, train_qa
    from llmrec.users.pretrain import PretrainConfig, evaluate_examples, train_sequence_model
    from llmrec.users.sequence import SequenceEncoderConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.dtype = resolve_dtype(args.dtype)
    data = load_dataset(args.data)
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
    train = sample_per_task(build_uqa(data, split="train", seed=args.seed, recent_window=RECENT_WINDOW),
                            args.train_per_task, args.seed)
    test = sample_per_task(build_uqa(data, split="test", seed=args.seed, recent_window=RECENT_WINDOW),
                           args.test_per_task, args.seed)

    variants = []
    for name in args.variants.split(","):
        variants += [("soft", int(k)) for k in args.ks.split(",")] if name == "soft" else [(name, 0)]
    def write_results() -> None:
        out = {
            "command": "python scripts/bench_uqa.py " + " ".join(f"--{a.replace('_', '-')} {v}" for a, v in vars(args).items()),
            "machine": machine_facts(),
            "model": f"SmolLM2-135M-Instruct ({args.dtype}) + LoRA preset 'lora'",
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
        with tempfile.TemporaryDirectory() as tmp:
            cfg = QATrainConfig(output_dir=tmp, epochs=args.epochs, learning_rate=args.lr, seed=args.seed)
            if k:  # the soft-prompt recipe's code, over a copy of the pretrained encoder
                soft = SoftPromptSection(k=k, max_items=max_len, projector=args.projector,
                                         anchor_text="items" if args.anchor_text == "items" else "categories",
                                         align_epochs=args.text_align_epochs, align_sharpness=args.align_sharpness,
                                         user_lr=args.user_lr)
                encoder = copy.deepcopy(pre.model)
                plm, report = train_soft_prompt(data, encoder, split.train, train, soft, cfg, dtype=args.dtype,
                                                adapter=None if args.soft_llm == "frozen" else "lora",
                                                worked=args.worked_answers)
            else:
                model, tok, llm = lora_model(args.dtype)
                prompts = [uqa_prompt(ex, style, data=data, max_items=args.text_items, worked=args.worked_answers)
                           for ex in train]
                rows = qa_rows(prompts, [ex.target(args.worked_answers) for ex in train], tok)
                report = train_qa(model, rows, tok.pad_token_id, cfg)
                report["text_align"] = None
        if k:
            scored = evaluate_soft_prompt(plm, encoder, test, worked=args.worked_answers, data=data)
            preds, acc, sec, tokens = (scored["predictions"], scored["accuracy"], scored["answer_seconds_per_question"],
                                       scored["mean_prompt_tokens"])
        else:
            llm.eval()
            test_rows = qa_rows([uqa_prompt(ex, style, data=data, max_items=args.text_items,
                                            worked=args.worked_answers) for ex in test],
                                [ex.target(args.worked_answers) for ex in test], tok)

            def gen(b, n, llm=llm, tok=tok):
                out = llm.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], max_new_tokens=n,
                                   do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id)
                return out[:, b["input_ids"].shape[1]:]
            preds, sec = generate_answers(gen, test_rows, tok)
            acc, tokens = uqa_accuracy(preds, test), sum(test_rows["prompt_len"]) / len(test_rows)
        align_report = report.pop("text_align")
        results[label] = {"accuracy": acc, "mean_prompt_tokens": tokens,
                          "train": {k2: v for k2, v in report.items() if k2 != "loss_curve"},
                          "loss_first_last": [report["loss_curve"][0][1], report["loss_curve"][-1][1]]
                          if report["loss_curve"] else None,
                          "text_align": align_report,
                          "answer_seconds_per_question": sec, "examples": examples_by_task(preds, test)}
        if args.save_model and label == args.save_variant:
            if not k:  # a text variant: the LoRA LLM, answering from the history as text
                plm = PersonalLM(llm, tok, None, {i: item_title(it) for i, it in data.items.items()},
                                 PersonalLMConfig(base_model="smollm2-135m", adapter="lora", dtype=args.dtype))
            plm.save(args.save_model)
        print(label, json.dumps({"macro": acc["macro"], "overall": acc["overall"], "tokens": results[label]["mean_prompt_tokens"]}),
              flush=True)
        write_results()  # after every variant: a long run keeps what it has measured


if __name__ == "__main__":
    main()
