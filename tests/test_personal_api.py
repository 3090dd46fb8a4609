"""PersonalLM's text API (answer / profile / generate) and the CLI wrappers, on a tiny model."""

from __future__ import annotations

import pytest

from llmrec.cli import main
from llmrec.data.schema import UserHistory
from llmrec.errors import ConfigError, DataError, LlmrecError
from llmrec.lm.personal import PersonalLM


@pytest.fixture(scope="module")
def base_plm(tiny_llama_dir, ml100k):
    return PersonalLM.from_base(str(tiny_llama_dir), ml100k.items, dtype="fp32")


def test_answer_profile_generate_are_deterministic_text(base_plm, ml100k):
    hist = ml100k.histories()["1"]
    a1 = base_plm.answer(hist, "Which genre does this user like?", ml100k, max_new_tokens=5)
    a2 = base_plm.answer(hist, "Which genre does this user like?", ml100k, max_new_tokens=5)
    assert isinstance(a1, str) and a1 == a2
    assert isinstance(base_plm.profile(hist, ml100k, max_new_tokens=5), str)
    assert isinstance(base_plm.generate("Hello", max_new_tokens=3), str)


def test_bad_input(base_plm, ml100k):
    with pytest.raises(DataError, match="empty history"):
        base_plm.profile(UserHistory("x", (), (), ()), ml100k)
    with pytest.raises(LlmrecError, match="no semantic-ID vocabulary"):
        base_plm.recommend(["1"], k=3)


def test_cli_unknown_user_exits_2(capsys, tiny_llama_dir):
    assert main(["answer", "--model", str(tiny_llama_dir), "--user", "nobody", "Which genre?"]) == 2
    assert "unknown user 'nobody'" in capsys.readouterr().err


def test_cli_answer_and_profile(capsys, tiny_llama_dir):
    assert main(["answer", "--model", str(tiny_llama_dir), "--user", "1", "--max-items", "3", "Which genre?"]) == 0
    assert main(["profile", "--model", str(tiny_llama_dir), "--user", "1", "--max-items", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 2


def _soft_plm(tiny_llama_dir, ml100k, k: int = 2) -> PersonalLM:
    """A PersonalLM whose answers come from a (random) soft-prompt user model over ml-100k's catalogue."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmrec.lm.loading import load_causal_lm
    from llmrec.lm.personal import PersonalLMConfig
    from llmrec.lm.soft_prompt import SequenceUserEncoder, SoftPromptConfig, SoftPromptModel, add_user_token
    from llmrec.tasks.uqa import item_title
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    torch.manual_seed(0)
    llm, tok = load_causal_lm(tiny_llama_dir, dtype="fp32")
    uid = add_user_token(tok, llm)
    llm = get_peft_model(llm, LoraConfig(r=2, target_modules=["q_proj"]))
    ids = ml100k.item_ids
    enc = SequenceUserEncoder(SequenceEncoder(SequenceEncoderConfig(n_items=len(ids), d_model=16, n_heads=2,
                                                                    max_len=8, pooling="mean"), ids), k)
    soft = SoftPromptModel(llm, enc, uid, SoftPromptConfig(k=k, train_llm=True, max_items=8))
    with torch.no_grad():  # make the projector's output user-dependent and non-trivial
        for p in soft.projector.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    titles = {i: item_title(it) for i, it in ml100k.items.items()}
    return PersonalLM(llm, tok, None, titles, PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32"),
                      soft=soft, soft_item_ids=ids)


def test_soft_prompt_answers_survive_save_and_load(tiny_llama_dir, ml100k, tmp_path, capsys, monkeypatch):
    plm = _soft_plm(tiny_llama_dir, ml100k)
    hist = ml100k.histories()["1"]
    answer = plm.answer(hist, "Which genre lately?", ml100k, max_new_tokens=4)
    assert answer == plm.soft_answer(hist, "Which genre lately?", max_new_tokens=4)
    plm.save(tmp_path / "m")
    assert (tmp_path / "m" / "user" / "user_encoder.json").is_file() and not (tmp_path / "m" / "sids").exists()
    again = PersonalLM.load(tmp_path / "m", dtype="fp32")
    assert again.soft is not None and again.soft.config.k == 2
    assert again.answer(hist, "Which genre lately?", ml100k, max_new_tokens=4) == answer
    assert isinstance(again.answer(hist, "Which genre lately?", ml100k, max_new_tokens=4, soft=False), str)
    with pytest.raises(LlmrecError, match="empty history"):
        again.soft_answer(UserHistory("x", (), (), ()), "Which genre?")
    with pytest.raises(LlmrecError, match="unknown to the user encoder"):
        again.soft_answer(UserHistory("x", ("nope",), (0,), (None,)), "Which genre?")
    capsys.readouterr()
    assert main(["answer", "--model", str(tmp_path / "m"), "--user", "1", "Which genre lately?", "--dtype", "fp32"]) == 0
    cli = again.answer(hist, "Which genre lately?", ml100k)  # the CLI's default max_new_tokens
    assert capsys.readouterr().out == cli + "\n"
    # the training format: options and answer kind reach the soft prompt, from the API and the CLI
    q = "Has this user's taste shifted?"
    shaped = again.answer(hist, q, ml100k, options=("yes", "no"), answer_kind="word yes or no")
    assert shaped == again.soft_answer(hist, q, options=("yes", "no"), answer_kind="word yes or no")
    assert main(["answer", "--model", str(tmp_path / "m"), "--user", "1", q, "--options", "yes, no",
                 "--answer-kind", "word yes or no", "--dtype", "fp32"]) == 0
    assert capsys.readouterr().out == shaped + "\n"
    with pytest.raises(ConfigError, match="soft-prompt"):
        again.answer(hist, q, ml100k, soft=False, options=("yes", "no"))
    import llmrec.lm.personal as personal  # the tiny model's reply may not show it: check the prompt itself

    real_render, prompts = personal.render, []
    monkeypatch.setattr(personal, "render", lambda name, **kw: prompts.append(real_render(name, **kw)) or prompts[-1])
    assert main(["answer", "--model", str(tmp_path / "m"), "--user", "1", q, "--options", "yes, no",
                 "--answer-kind", "word yes or no"]) == 0
    assert "Options: yes, no." in prompts[-1] and prompts[-1].endswith("Answer with only the word yes or no.")
    again.answer(hist, q, ml100k)
    assert "Options" not in prompts[-1] and prompts[-1].endswith("Answer briefly.")


def test_soft_answer_without_a_user_model_is_a_clear_error(base_plm, ml100k):
    with pytest.raises(LlmrecError, match="no soft-prompt user encoder"):
        base_plm.answer(ml100k.histories()["1"], "Which genre?", ml100k, soft=True)


def test_grounded_profile_sees_the_facts_and_starts_with_the_prefix(base_plm, ml100k):
    from llmrec.lm.personal import PROFILE_PREFIX
    from llmrec.tasks.profile import profile_write_prompt, template_profile

    hist = ml100k.histories()["1"]
    grounded = profile_write_prompt(hist, ml100k, max_items=3, grounded=True)
    assert "Facts about the whole history: " + template_profile(hist, ml100k) in grounded
    assert "Facts" not in profile_write_prompt(hist, ml100k, max_items=3)
    text = base_plm.profile(hist, ml100k, max_items=3, max_new_tokens=4)
    assert text.startswith(PROFILE_PREFIX)
    assert not base_plm.profile(hist, ml100k, max_items=3, max_new_tokens=4, grounded=False).startswith(PROFILE_PREFIX)


def test_hf_model_generate_starts_every_reply_with_the_prefix(tiny_llama):
    from llmrec.evaluation.models import HFModel

    model = HFModel(loaded=(tiny_llama.model, tiny_llama.tokenizer))
    replies = model.generate(["Describe the user.", "Hi"], 3, answer_prefix="This user")
    assert len(replies) == 2 and all(r.startswith("This user") for r in replies)
