"""Task YAML schema: the built-in files validate; unknown keys, bad metrics, includes, groups, prompts."""

from __future__ import annotations

import pytest

from llmrec.cli import main
from llmrec.errors import ConfigError, DataError
from llmrec.evaluation.prompts import load_template, render
from llmrec.evaluation.tasks import load_registry, validate_paths

TASK = """
task: {name}
dataset: lamp
builder: lamp
prompt: prompts/lamp_3.jinja
output: {{type: regress, range: [1, 5]}}
metrics: [mae]
"""


def write(folder, name, text):
    (folder / f"{name}.yaml").write_text(text)


def test_builtin_tasks_validate_and_list(capsys):
    assert validate_paths() == {}
    reg = load_registry()
    assert {f"lamp_{i}" for i in range(1, 8)} | {"ml100k_rating", "ml100k_next_genre", "ml100k_next_item"} <= set(reg.tasks)
    assert [t.task for t in reg.expand("lamp")] == [f"lamp_{i}" for i in range(1, 8)]
    assert reg.tasks["lamp_3"].generation.max_new_tokens == 4  # merged over the base's mapping
    assert reg.tasks["lamp_3"].generation.batch_size == 4  # inherited from _lamp_base.yaml
    assert main(["eval", "ls", "--json"]) == 0
    assert "ml100k_rating" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        ("colour: blue\n", "unknown key"),
        ("retriever: {name: bm25, kk: 3}\n", "unknown key"),
        ("retriever: {name: tfidf}\n", "retriever.name"),
        ("scoring: fuzzy\n", "scoring"),
    ],
)
def test_unknown_keys_and_bad_values_are_errors(tmp_path, extra, message):
    write(tmp_path, "mine", TASK.format(name="mine") + extra)
    with pytest.raises(ConfigError, match=message):
        load_registry([tmp_path])
    assert str(tmp_path / "mine.yaml") in validate_paths([tmp_path])


def test_metric_must_exist_and_fit_the_output_type(tmp_path):
    write(tmp_path, "a", TASK.format(name="a").replace("[mae]", "[accuracy]"))
    with pytest.raises(ConfigError, match="does not apply"):
        load_registry([tmp_path])
    write(tmp_path, "a", TASK.format(name="a").replace("[mae]", "[bleu]"))
    with pytest.raises(ConfigError, match="unknown metric"):
        load_registry([tmp_path])


def test_output_spec_validation(tmp_path):
    write(tmp_path, "c", TASK.format(name="c").replace("{type: regress, range: [1, 5]}", "{type: classify, labels: [x]}"))
    with pytest.raises(ConfigError, match="at least two labels"):
        load_registry([tmp_path])
    write(tmp_path, "c", TASK.format(name="c").replace("range: [1, 5]", "range: [5, 1]"))
    with pytest.raises(ConfigError, match="low < high"):
        load_registry([tmp_path])


def test_include_merges_and_cycles_fail(tmp_path):
    (tmp_path / "_base.yaml").write_text("dataset: lamp\nbuilder: lamp\nmetrics: [mae, rmse]\n"
                                         "generation: {batch_size: 2, max_new_tokens: 9}\n")
    write(tmp_path, "child", "include: _base.yaml\ntask: child\nprompt: prompts/lamp_3.jinja\n"
                             "output: {type: regress, range: [1, 5]}\ngeneration: {batch_size: 5}\n")
    spec = load_registry([tmp_path]).tasks["child"]
    assert spec.metrics == ("mae", "rmse") and spec.generation.batch_size == 5 and spec.generation.max_new_tokens == 9
    (tmp_path / "_x.yaml").write_text("include: _y.yaml\n")
    (tmp_path / "_y.yaml").write_text("include: _x.yaml\n")
    write(tmp_path, "loop", "include: _x.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_registry([tmp_path])


def test_groups_and_user_folder_override(tmp_path):
    write(tmp_path, "mine", TASK.format(name="mine"))
    write(tmp_path, "grp", "group: grp\ntasks: [mine, lamp_3]\n")
    reg = load_registry([tmp_path])
    assert [t.task for t in reg.expand("grp,ml100k_rating")] == ["mine", "lamp_3", "ml100k_rating"]
    write(tmp_path, "bad", "group: bad\ntasks: [nope]\n")
    with pytest.raises(ConfigError, match="unknown task"):
        load_registry([tmp_path])
    with pytest.raises(ConfigError, match="unknown task"):
        load_registry().expand("nope")


def test_validate_cli_exit_code(tmp_path, capsys):
    write(tmp_path, "mine", TASK.format(name="mine").replace("prompts/lamp_3.jinja", "missing.jinja"))
    assert main(["eval", "validate", "--include-path", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().out


def test_prompts_are_sandboxed_and_strict(tmp_path):
    (tmp_path / "p.jinja").write_text("{{ input }} {{ missing }}")
    with pytest.raises(DataError, match="missing"):
        render(load_template(str(tmp_path / "p.jinja")), {"input": "x"}, record="q1")
    (tmp_path / "evil.jinja").write_text("{{ input.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match="evil.jinja: prompt template tried an unsafe"):
        render(load_template(str(tmp_path / "evil.jinja")), {"input": "x"})
    text = render(load_template("prompts/lamp_3.jinja"),
                  {"input": "Review: ok", "profile": [{"score": "4", "text": "nice"}], "labels": [], "k": 1})
    assert text == '4 is the score for "nice"\nReview: ok\nAnswer with one number from 1 to 5 only.'


def test_validate_flags_unknown_builder(tmp_path):
    write(tmp_path, "b", TASK.format(name="b").replace("builder: lamp", "builder: nope"))
    errors = validate_paths([tmp_path])
    assert "unknown builder 'nope'" in errors[str(tmp_path / "b.yaml")]


def test_every_builder_declares_the_dataset_args_it_reads():
    from llmrec.evaluation.builders import BUILDER_ARGS, BUILDERS, UQA_ARGS
    from llmrec.tasks.uqa import HARNESS_ARGS

    assert set(BUILDER_ARGS) == set(BUILDERS)
    assert BUILDER_ARGS["uqa"] == frozenset(UQA_ARGS) == frozenset(HARNESS_ARGS)  # one list, checked here
