"""PersonalLM's text API (answer / profile / generate) and the CLI wrappers, on a tiny model."""

from __future__ import annotations

import pytest

from llmrec.cli import main
from llmrec.data.schema import UserHistory
from llmrec.errors import DataError, LlmrecError
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
