"""The README demo, on the offline defaults (MovieLens-100k + SmolLM2-135M-Instruct), end to end in minutes:

    make demo            # or: .venv/bin/python scripts/demo.py [--train-steps 40]

1. data: MovieLens-100k, leave-one-out split;
2. baselines: popularity and a SASRec-style encoder trained briefly with full cross-entropy;
3. item tokenizer: residual k-means semantic IDs for every movie from its MiniLM text vector and its SASRec
   item-table row (collaborative IDs; unique, with diagnostics);
4. generative recommender: SmolLM2-135M + LoRA + SID tokens, trained for a few minutes, then trie-constrained
   beam search for one user (only real, unseen movies can come out), alone and in shallow fusion with SASRec;
5. the LLM answers a question about that user from their history, and writes the user's profile;
6. user embedder: the SASRec encoder + a projector onto the LLM's genre-word embeddings turn the history into
   k = 4 soft-prompt vectors, text-aligned to the genres of their items (no LLM pass); trained briefly with
   LoRA on computed questions (UQA-style; interest shift as a worked answer, "Drama, Comedy: yes"), the LLM
   answers from those 4 vectors instead of the ~1,100-token history text.
The full-budget figures are in the README tables; this run only shows the whole chain working.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from llmrec.hardware import configure_openmp

configure_openmp()  # before torch loads: passive OpenMP waits when other jobs already use the CPU

from llmrec.recipes.soft_prompt import SoftPromptSection, train_soft_prompt  # noqa: E402


def fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in ("recall@10", "ndcg@10") if k in metrics)


def main() -> None:
    p = argparse.ArgumentParser(description="llmrec end-to-end demo")
    p.add_argument("--train-steps", type=int, default=40,
                   help="generative-recommender training steps (batch 8; ~3 min alone on 2 cores). A step budget, "
                   "not a wall-time one, so the demo shows the same model however busy the machine is")
    p.add_argument("--soft-steps", type=int, default=40, help="soft-prompt QA training steps (batch 8)")
    p.add_argument("--user", default="1")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="LLM dtype (auto = bf16 only where the hardware runs it natively, else fp32)")
    args = p.parse_args()
    # heavy imports after parsing, so --help answers at once
    import torch

    from llmrec.data import leave_one_out, load_dataset
    from llmrec.data.stats import dataset_info
    from llmrec.evaluation.ranking import full_catalogue_metrics, summaries, topk_from_scores
    from llmrec.hardware import resolve_dtype
    from llmrec.items import SemanticIdConfig, build_semantic_ids
    from llmrec.items.collaborative import collaborative_vectors
    from llmrec.items.encoders import encode_items
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.tasks.profile import history_lines, template_profile
    from llmrec.tasks.uqa import build_uqa
    from llmrec.training.genrec import GenRecTrainConfig, evaluate_genrec, train_genrec
    from llmrec.training.qa import QATrainConfig
    from llmrec.users.baselines import Popularity
    from llmrec.users.pretrain import (
        PretrainConfig,
        evaluate_examples,
        score_histories,
        sequence_log_prior,
        train_sequence_model,
    )
    from llmrec.users.sequence import SequenceEncoderConfig

    args.dtype = resolve_dtype(args.dtype)
    torch.manual_seed(0)
    t0 = time.time()
    data = load_dataset("ml-100k")
    info = dataset_info(data)
    print(f"[data] MovieLens-100k: {info['users']} users, {info['items']} items, {info['interactions']} ratings, "
          f"density {info['density']:.4f}, median history {info['history_length']['p50']:.0f}")
    split = leave_one_out(data.histories())

    test = split.test
    pop = Popularity.from_split(split, "test", data.item_ids)
    pop_m = summaries(full_catalogue_metrics(pop.scores(len(test)), data.item_ids, [e.target for e in test],
                                             [e.history.item_ids for e in test], protocols=("rated_removed",)))
    print(f"[baseline] popularity (test, rated removed): {fmt(pop_m['rated_removed'])}")
    sas = train_sequence_model(split, data.item_ids,
                               SequenceEncoderConfig(n_items=len(data.items), d_model=64, n_layers=2, max_len=50,
                                                     dropout=0.5, pooling="profile"),  # pooling: soft stage
                               PretrainConfig(max_epochs=15, patience=3, lr=3e-3, batch_size=32))
    sas_m = summaries(evaluate_examples(sas.model, test, protocols=("rated_removed",)))
    print(f"[baseline] SASRec, {sas.epochs_run} epochs in {sas.wall_s:.0f} s: {fmt(sas_m['rated_removed'])}")

    # item tokenizer: MiniLM text vectors next to SASRec's item table (trained on the training split only)
    vectors = encode_items(data, show_progress=False)
    sids, rep = build_semantic_ids(data, SemanticIdConfig(vectors="text+collaborative"), vectors=vectors,
                                   collaborative=collaborative_vectors(sas.model, list(data.items)),
                                   show_progress=False)
    print(f"[semantic ids] text + collaborative: {len(sids)} items, levels {sids.codebook_sizes}, unique "
          f"{rep['unique_fraction']:.3f}, collisions before disambiguation {rep['collision_rate_nearest']:.4f}, "
          f"level-1 use {rep['utilization'][0]:.2f}, category coherence x{rep['category_coherence']:.2f}")
    print(f"    'Toy Story' -> {sids.sid_string('1')}")

    plm = PersonalLM.create(sids, data.items, PersonalLMConfig(max_history=20, dtype=args.dtype), item_vectors=vectors,
                            vocabulary=data.vocabulary)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenRecTrainConfig(output_dir=tmp, epochs=1, max_steps=args.train_steps, max_windows=1, eval_users=30,
                                learning_rate=2e-3, logging_steps=10)
        report = train_genrec(plm, split.train, split.valid, cfg)
    print(f"[genrec] SmolLM2-135M + LoRA + SID tokens: {report['steps']} steps in {report['train_seconds']:.0f} s, "
          f"loss {report['loss_curve'][0][1]:.2f} -> {report['loss_curve'][-1][1]:.2f}" if report["loss_curve"] else "")
    summary, _, per_user = evaluate_genrec(plm, test[:50], beams=10)
    print(f"[genrec] first 50 test users after the short budget: {fmt(summary)}, invalid outputs "
          f"{summary['invalid_rate']:.0%}, {per_user * 1000:.0f} ms/user at 10 beams")

    hist = data.histories()[args.user]
    seen = list(hist.item_ids[:-1])
    print(f"[user {args.user}] last watched: " + "; ".join(plm.titles[i] for i in seen[-5:]))
    print(f"[user {args.user}] held-out next movie: {plm.titles[hist.item_ids[-1]]}")
    for rank, rec in enumerate(plm.recommend(seen, k=5), 1):
        print(f"    LLM #{rank}: {rec['title']}  (log-prob {rec['score']:.2f})")
    context = hist.prefix(len(hist) - 1)
    sas_top = topk_from_scores(score_histories(sas.model, [context]), sas.model.item_ids, [set(seen)], 5)[0]
    print("    SASRec top 5: " + "; ".join(plm.titles[i] for i in sas_top))
    prior = sequence_log_prior(sas.model, [context], plm.item_ids)
    fused = plm.recommend(seen, k=5, log_prior=prior, prior_weight=1.0)
    print("    LLM + SASRec shallow fusion top 5: " + "; ".join(r["title"] for r in fused))

    question = "Which genres does this user like lately?"
    print(f"[answer] {question} -> {plm.answer(context, question, data, max_items=10)}")
    print(f"[profile] template: {template_profile(context, data)}")
    print(f"[profile] LLM (grounded): {plm.profile(context, data, max_new_tokens=60)}")
    del plm

    # The soft-prompt recipe's code (llmrec.recipes.soft_prompt): SASRec states pooled as a profile (the last
    # SOFT.max_items items, the last 10, the last two) -> vocab projector over the LLM's genre-word embeddings,
    # text-aligned (sharpened towards the commonest genres, no LLM pass), user side frozen, then LoRA for
    # --soft-steps on interest questions computed from the training data, interest shift as a worked answer.
    with tempfile.TemporaryDirectory() as tmp:
        soft_plm, report = train_soft_prompt(
            data, sas.model, split.train, build_uqa(data, split="train", tasks=INTEREST), SOFT,
            QATrainConfig(output_dir=tmp, max_steps=args.soft_steps, learning_rate=1e-3), dtype=args.dtype, worked=True)
    align = report["text_align"]
    print(f"[soft prompt] SASRec encoder + genre-word projector -> {SOFT.k} vectors, text-aligned (held-out KL "
          f"{align['heldout_kl_before']:.2f} -> {align['heldout_kl_after']:.3f}), LoRA: {report['steps']} steps on "
          f"{report['rows']} interest questions in {report['train_seconds']:.0f} s")
    for ex in [e for e in build_uqa(data, split="test", tasks=INTEREST) if e.user_id == args.user]:
        reply = soft_plm.soft_answer(context, ex.question, options=ex.options or (), max_new_tokens=12,
                                     answer_kind=ex.kind_for(worked=True))
        text_tokens = len(soft_plm.tokenizer("\n".join(history_lines(context, data, max_items=SOFT.max_items)))["input_ids"])
        print(f"    {ex.question} -> {reply!r} (truth: {ex.answer}; {SOFT.k} soft tokens instead of "
              f"{text_tokens} history tokens)")
    print(f"[done] {time.time() - t0:.0f} s")


SOFT = SoftPromptSection(k=4, max_items=50, projector="vocab", anchor_text="categories", align_epochs=10,
                         align_sharpness=20, user_lr=0)
INTEREST = ("longterm_genre", "recent_genre", "interest_shift")


if __name__ == "__main__":
    main()
