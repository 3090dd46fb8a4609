"""Built-in prompts, adapter presets and task YAML are found in a checkout and in an installed layout, from any
working directory; a user prompts folder overrides a built-in template of the same name."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmrec.package_data as package_data
from llmrec.cli import main
from llmrec.errors import ConfigError
from llmrec.package_data import (
    PROMPTS_ENV,
    adapters_dir,
    data_candidates,
    prompt_dirs,
    prompts_dir,
    tasks_dir,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd outside the checkout and no user prompts folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROMPTS_ENV, "")
    return tmp_path


def test_checkout_folders_are_found_from_any_cwd(elsewhere: Path) -> None:
    assert prompts_dir() == ROOT / "prompts"
    assert adapters_dir() == ROOT / "adapters"
    assert tasks_dir() == ROOT / "eval" / "tasks"
    assert prompt_dirs() == [ROOT / "prompts"]


def test_installed_layout_wins_and_a_missing_folder_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "site-packages" / "llmrec"
    (package / "_data" / "prompts").mkdir(parents=True)
    monkeypatch.setattr(package_data, "files", lambda name: package)
    assert prompts_dir() == package / "_data" / "prompts"
    with pytest.raises(ConfigError, match=r"built-in adapters folder not found.*_data/adapters.*site-packages/adapters"):
        adapters_dir()


def test_repository_relative_paths_map_to_the_data_folders(elsewhere: Path, monkeypatch) -> None:
    user = elsewhere / "mine"
    monkeypatch.setenv(PROMPTS_ENV, str(user))
    assert data_candidates("prompts/sub/x.jinja") == [user / "sub" / "x.jinja", ROOT / "prompts" / "sub" / "x.jinja"]
    assert data_candidates("adapters/lora.yaml") == [ROOT / "adapters" / "lora.yaml"]
    assert data_candidates("eval/tasks/uqa.yaml") == [ROOT / "eval" / "tasks" / "uqa.yaml"]
    assert data_candidates("prompts") == data_candidates("/abs/prompts/x.jinja") == data_candidates("my/x.jinja") == []


def test_user_prompts_override_by_name_and_fall_back(elsewhere: Path, monkeypatch) -> None:
    from llmrec.items.encoders import load_template
    from llmrec.prompting import load_template_source

    builtin_label, builtin = load_template_source("genrec")
    assert Path(builtin_label) == ROOT / "prompts" / "genrec.jinja"
    user = elsewhere / "my-prompts"
    user.mkdir()
    (user / "genrec.jinja").write_text("Items: {{ history | length }}")
    (user / "item_text.jinja").write_text("{{ item.title }} (mine)")
    monkeypatch.setenv(PROMPTS_ENV, f"{elsewhere / 'missing'}:{user}")
    assert load_template_source("genrec") == (str(user / "genrec.jinja"), "Items: {{ history | length }}")
    assert load_template_source("answer")[0] == str(ROOT / "prompts" / "answer.jinja")  # not overridden
    # the item text default is a repository-relative path: the user's file wins, from any cwd
    assert load_template("prompts/item_text.jinja").render(item={"title": "T"}) == "T (mine)"
    monkeypatch.setenv(PROMPTS_ENV, "")
    assert load_template_source("genrec")[1] == builtin
    with pytest.raises(ConfigError, match="not found in"):
        load_template_source("no_such_prompt")


def test_adapter_presets_load_from_any_cwd(elsewhere: Path) -> None:
    from llmrec.lm.personal import load_adapter_preset

    assert load_adapter_preset("lora")["r"] > 0
    with pytest.raises(ConfigError, match=r"presets: \[.*'lora'.*'qlora'"):
        load_adapter_preset("no-such-preset")


def test_prompts_dir_option_reaches_task_templates(elsewhere: Path, capsys) -> None:
    tasks = elsewhere / "tasks"
    tasks.mkdir()
    base = (ROOT / "eval" / "tasks" / "ml100k_rating.yaml").read_text()
    (tasks / "my_rating.yaml").write_text(
        base.replace("include: _ml100k_base.yaml", "include: " + str(ROOT / "eval" / "tasks" / "_ml100k_base.yaml"))
        .replace("task: ml100k_rating", "task: my_rating").replace("prompts/ml100k_rating.jinja", "prompts/my_rating.jinja"))
    user = elsewhere / "my-prompts"
    user.mkdir()
    (user / "my_rating.jinja").write_text("{{ profile }} -> rating?")
    assert main(["eval", "validate", "--include-path", str(tasks)]) == 2  # the prompt is nowhere without the option
    assert "my_rating.jinja" in capsys.readouterr().out
    assert main(["--prompts-dir", str(user), "eval", "validate", "--include-path", str(tasks)]) == 0
    assert "all task files are valid" in capsys.readouterr().out
