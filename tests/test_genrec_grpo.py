"""Online alignment of the generative recommender with trl's GRPOTrainer (issue 20): beam-rollout groups and
rewards on hand-made cases, the rollout adapter's groups (valid, distinct, never the user's own items), a tiny
GRPO run that raises the true items' log-probability, resume, and the model saved in the PersonalLM format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_genrec_pref import _split, init_dir, ml100k_init  # noqa: F401  (init_dir: a fixture)

from llmrec.errors import ConfigError, LlmrecError
from llmrec.lm.personal import PersonalLM
from llmrec.training.grpo import (
    BeamRollouts,
    GenrecGrpoConfig,
    group_rewards,
    reward_function,
    rollout_group,
    train_genrec_grpo,
)
from llmrec.training.preference import completion_logps, preference_prompts


def test_rollout_group_guides_the_true_item_in_only_when_missing():
    assert rollout_group(["a", "b", "c", "d"], "b", 3, guided=True) == ["a", "b", "c"]
    assert rollout_group(["a", "b", "c", "d"], "z", 3, guided=True) == ["a", "b", "z"]
    assert rollout_group(["a", "b", "c", "d"], "z", 3, guided=False) == ["a", "b", "c"]
    with pytest.raises(LlmrecError, match="distinct"):
        rollout_group(["a", "b"], "a", 3, guided=True)


def test_group_rewards_on_hand_made_groups():
    assert group_rewards(["a", "t", "b"], "t", "hit") == [0.0, 1.0, 0.0]
    r = group_rewards(["a", "t", "b"], "t", "rank")
    w1, w3 = 1 / math.log2(2), 1 / math.log2(4)  # the wrong items sit at positions 1 and 3
    assert r == pytest.approx([-w1 / (w1 + w3), 1.0, -w3 / (w1 + w3)])
    assert sum(x for x in r if x < 0) == pytest.approx(-1.0)  # a confident mistake costs most, all sum to -1
    assert group_rewards(["a", "b"], "t", "rank") == pytest.approx([-1 / (1 + 1 / math.log2(3)),
                                                                   -(1 / math.log2(3)) / (1 + 1 / math.log2(3))])
    with pytest.raises(ConfigError, match="reward"):
        group_rewards(["a"], "a", "mrr")
    # trl's call: consecutive groups, positions 1..G, targets per row
    reward = reward_function("hit")
    assert reward.__name__ == "hit_reward"
    got = reward(["k1"] * 3 + ["k2"] * 3, [], target=["b"] * 3 + ["z"] * 3, item=list("abcxyz"),
                 position=[1, 2, 3, 1, 2, 3])
    assert got == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_config_checks():
    with pytest.raises(ConfigError, match="generations"):
        GenrecGrpoConfig(generations=1)
    with pytest.raises(ConfigError, match="beams"):
        GenrecGrpoConfig(generations=4, beams=3)
    with pytest.raises(ConfigError, match="multiple"):
        GenrecGrpoConfig(prompts_per_step=3, micro_prompts=2)


def test_beam_rollouts_give_valid_distinct_groups_never_the_users_items(init_dir):  # noqa: F811
    plm = PersonalLM.load(init_dir, dtype="fp32")
    split, held = _split()
    prompts = preference_prompts(split.train, held, positions=2)[:5]
    rollouts = BeamRollouts(plm, prompts, generations=4, guided=True, beams=6)
    keys = [f"{p.user_id}@{len(p.history)}" for p in prompts]
    out = rollouts([k for k in keys for _ in range(4)])
    assert len(out["completion_ids"]) == len(out["item"]) == 20
    for i, p in enumerate(prompts):
        group = out["item"][4 * i:4 * i + 4]
        assert len(set(group)) == 4 and p.target in group  # guided: the true item is always in the group
        assert not (set(group) - {p.target}) & p.forbidden  # never the user's own / held-out items
        assert out["prompt_ids"][4 * i] == plm.encode_prompt(p.history)
        for item, ids in zip(group, out["completion_ids"][4 * i:4 * i + 4], strict=True):
            assert ids == plm.index.token_ids(plm.item_row[item])
    assert out["position"][:4] == [1, 2, 3, 4]
    with pytest.raises(LlmrecError, match="repeated"):
        rollouts([keys[0], keys[0], keys[1], keys[1]])


def test_tiny_grpo_raises_the_true_items_resumes_and_saves(init_dir, tmp_path):  # noqa: F811
    plm = PersonalLM.load(init_dir, dtype="fp32")
    split, held = _split()
    prompts = preference_prompts(split.train, held)
    hist, targets = [p.history for p in prompts], [p.target for p in prompts]
    before = completion_logps(plm, hist, targets)
    cfg = GenrecGrpoConfig(output_dir=str(tmp_path / "ck"), generations=4, guided=True, prompts_per_step=4,
                           micro_prompts=2,
                           max_steps=6, learning_rate=5e-3, eval_users=4, eval_steps=3, eval_beams=3,
                           logging_steps=1, init_is_candidate=False, early_stopping_patience=10)
    report = train_genrec_grpo(plm, prompts, split.valid, cfg)
    after = completion_logps(plm, hist, targets)
    assert report["steps"] == 6 and report["selected"] == "aligned"
    assert after.mean() > before.mean() + 0.1  # the policy gradient pushed the true items up
    assert [h["step"] for h in report["valid_curve"]] == [3, 6]
    assert report["rollouts"]["calls"] == 6 and 0.0 <= report["rollouts"]["target_in_beams"] <= 1.0
    assert any("reward" in k for h in report["grpo_curve"] for k in h)
    hits = [h["rollouts/beams_hit"] for h in report["grpo_curve"] if "rollouts/beams_hit" in h]
    assert hits and all(0.0 <= x <= 1.0 for x in hits)
    # same folder format as supervised / DPO models; loads and decodes the same
    out = plm.save(tmp_path / "aligned")
    again = PersonalLM.load(out, dtype="fp32")
    np.testing.assert_allclose(completion_logps(again, hist[:6], targets[:6]), after[:6], atol=1e-4)
    # resume: a longer run picks up at the last checkpoint
    plm2 = PersonalLM.load(init_dir, dtype="fp32")
    more = train_genrec_grpo(plm2, prompts, split.valid, GenrecGrpoConfig(**(cfg.to_dict() | {"max_steps": 9})))
    assert more["resumed_from"].endswith("checkpoint-6") and more["steps"] == 9
    assert torch.isfinite(torch.tensor(more["train_loss"]))


def test_train_genrec_pref_grpo_end_to_end(tiny_llama_dir, ml100k, tmp_path, capsys):
    from llmrec.cli import main

    ml100k_init(tiny_llama_dir, ml100k, tmp_path)
    out = tmp_path / "grpo"
    assert main(["train", "genrec-pref", "--config", "tiny/genrec-pref", "--init", str(tmp_path / "init"),
                 "--method", "grpo", "--grpo.generations", "3", "--grpo.prompts_per_step", "4",
                 "--grpo.reward", "rank", "--out", str(out), "--data", "none"]) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "grpo" and results["pairs"] is None
    train = results["train"]
    assert train["steps"] == 2 and train["prompts"] == 8 and train["rollouts"]["calls"] == 2
    assert set(train["target_logp"]) == {"positions", "before", "after"}
    assert results["test_users"] == 4 and "ndcg@10" in results["test"]
    assert (tmp_path / "grpo.checkpoints" / "checkpoint-2").is_dir()
    assert main(["recommend", "--model", str(out), "--user", "1", "-k", "3", "--json"]) == 0
    assert len({r["item_id"] for r in json.loads(capsys.readouterr().out)["recommendations"]}) == 3
    assert main(["train", "genrec-pref", "--config", "tiny/genrec-pref", "--init", str(tmp_path / "init"),
                 "--method", "grpo", "--grpo.generations", "1", "--out", str(tmp_path / "x")]) == 2
    assert "generations" in capsys.readouterr().err
    assert main(["train", "genrec-pref", "--config", "tiny/genrec-pref", "--init", str(tmp_path / "init"),
                 "--method", "grpo", "--sasrec", str(tmp_path / "init"), "--out", str(tmp_path / "y")]) == 2
    assert "--sasrec" in capsys.readouterr().err


def test_kl_reference_is_the_supervised_model(init_dir, tmp_path):  # noqa: F811
    # beta > 0: the KL term's reference must be the supervised model (LoRA + trained SID rows), not trl's
    # adapter-disabled base; at the first step the policy is that model, so the logged KL is ~0
    plm = PersonalLM.load(init_dir, dtype="fp32")
    with torch.no_grad():  # make the "supervised" SID rows and LoRA differ clearly from the base model's
        for name, p in plm.model.named_parameters():
            if "trainable_tokens_delta" in name or "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.5)
    split, held = _split()
    prompts = preference_prompts(split.train, held)
    cfg = GenrecGrpoConfig(output_dir=str(tmp_path / "ck"), generations=3, prompts_per_step=2, micro_prompts=1,
                           max_steps=1, learning_rate=1e-6, eval_users=2, eval_beams=2, logging_steps=1,
                           beta=0.1, init_is_candidate=False)
    report = train_genrec_grpo(plm, prompts, split.valid, cfg)
    kl = [h["kl"] for h in report["grpo_curve"] if "kl" in h]
    assert kl and abs(kl[0]) < 1e-3
