"""Bad input never ends in a traceback, destroys data or escapes its folder (issue 17).

One table of CLI cases: ``Case(id, argv, setup, code, message)``. ``setup(tmp)`` writes the bad files into a
fresh folder; ``argv`` may use ``{tmp}`` (that folder) and ``{fix}`` (tests/fixtures/lamp). Each case must
exit with ``code`` and print ``message`` (stdout or stderr), with no traceback. ``check(tmp)``, when given,
then asserts that nothing was destroyed. The harness and CLI cases are in ``HARNESS_CASES``; model-directory
cases go in ``MODEL_CASES`` (same shape); ``CASES`` is what runs. Specific tests follow the table.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmrec.cli import main
from llmrec.errors import ConfigError, DataError

FIX = Path(__file__).parent / "fixtures" / "lamp"
Q3, O3 = FIX / "lamp3_dev_questions.json", FIX / "lamp3_dev_outputs.json"
PRECIOUS = "precious data, not from llmrec\n"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    setup: Callable[[Path], None] | None
    code: int
    message: str
    check: Callable[[Path], None] | None = None


# ---- setups ---------------------------------------------------------------------------------------------------

TASK = """task: {name}
dataset: lamp
builder: lamp
prompt: {prompt}
dataset_args: {{task: LaMP_3}}
output: {{type: regress, range: [1, 5]}}
metrics: [mae]
"""


def _task(name: str = "mine", prompt: str = "prompts/lamp_3.jinja", template: str | None = None,
          file: str = "mine.yaml", extra: str = "") -> Callable[[Path], None]:
    """A task folder ``tmp/tasks`` with one task file (and ``p.jinja`` = ``template`` when given)."""

    def setup(tmp: Path) -> None:
        folder = tmp / "tasks"
        folder.mkdir()
        (folder / file).write_text(TASK.format(name=name, prompt=prompt) + extra, encoding="utf-8")
        if template is not None:
            (folder / "p.jinja").write_text(template, encoding="utf-8")

    return setup


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return setup


def _golds(*outputs: str, raw: str | None = None) -> Callable[[Path], None]:
    """LaMP_3 golds for the fixture's ids 3001..3003 with these outputs (``raw``: the file text as given)."""
    recs = [{"id": i, "output": o} for i, o in zip(("3001", "3002", "3003"), outputs, strict=True)]
    return _write("golds.json", raw if raw is not None else json.dumps({"task": "LaMP_3", "golds": recs}))


def _out_file(tmp: Path) -> None:
    (tmp / "results.json").write_text(PRECIOUS)


def _foreign_folder(tmp: Path) -> None:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text(PRECIOUS)


def _intact(rel: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        assert (tmp / rel).read_text() == PRECIOUS

    return check


def _nothing_escaped(tmp: Path) -> None:
    assert not (tmp / "escaped_task").exists() and not list(tmp.parent.glob("escaped_task*"))


def _dataset(interactions_name: str, interactions: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "items.jsonl").write_text('{"item_id": "a", "title": "Dune"}\n')
        _write(interactions_name, interactions)(tmp)
        cfg = {"format": "generic", "items": "items.jsonl", "interactions": interactions_name}
        (tmp / "shop.json").write_text(json.dumps(cfg))

    return setup


def _results(obj) -> Callable[[Path], None]:
    return _write("results.json", json.dumps(obj))


EVAL_RUN = ("eval", "run", "--tasks", "lamp_3", "--baselines", "user-mean", "--task-arg", f"questions={Q3}",
            "--task-arg", f"outputs={O3}", "--n-boot", "0", "--no-progress", "--no-report")
RUN_MINE = ("eval", "run", "--include-path", "{tmp}/tasks", "--tasks", "mine", "--baselines", "user-mean",
            "--task-arg", f"questions={Q3}", "--task-arg", f"outputs={O3}", "--n-boot", "0", "--no-progress",
            "--no-report", "--out", "{tmp}/out")
VALIDATE = ("eval", "validate", "--include-path", "{tmp}/tasks")
SCORE = ("eval", "score", "--task", "LaMP_3", "--predictions", str(O3), "--n-boot", "0", "--golds", "{tmp}/golds.json")
DEEP = "[" * 100_000 + "]" * 100_000
HUGE_ID = "1" * 5001

HARNESS_CASES: list[Case] = [
    # ---- outputs never destroy data
    Case("eval-run-out-onto-file", (*EVAL_RUN, "--out", "{tmp}/results.json"), _out_file, 2,
         "an existing file that llmrec did not write is in the way", _intact("results.json")),
    Case("eval-report-out-onto-results", ("eval", "report", "{tmp}/results.json", "--out", "{tmp}/results.json"),
         _results({"tasks": {}}), 2, "did not write is in the way",
         lambda tmp: json.loads((tmp / "results.json").read_text()) == {"tasks": {}} or pytest.fail("changed")),
    Case("eval-report-out-onto-foreign-file", ("eval", "report", "{tmp}/r.json", "--out", "{tmp}/results.json"),
         lambda tmp: (_out_file(tmp), (tmp / "r.json").write_text('{"tasks": {}}')), 2, "did not write is in the way",
         _intact("results.json")),
    Case("eval-run-failure-leaves-no-output", ("eval", "run", "--tasks", "lamp_3", "--baselines", "user-mean",
                                               "--out", "{tmp}/o"), None, 2, "point it at your LaMP files",
         lambda tmp: not (tmp / "o").exists() or pytest.fail("an empty --out was left behind")),
    Case("eval-run-out-onto-foreign-folder", (*EVAL_RUN, "--out", "{tmp}/mine"), _foreign_folder, 2,
         "not empty and was not written by llmrec", _intact("mine/notes.txt")),
    # ---- names from task files never become paths
    Case("task-name-dotdot-run", RUN_MINE, _task(name="../../escaped_task"), 2, "field 'task'", _nothing_escaped),
    Case("task-name-dotdot-validate", VALIDATE, _task(name="../../escaped_task"), 2, "cannot be used as a file name"),
    Case("task-name-slash", VALIDATE, _task(name="a/b"), 2, "field 'task'"),
    Case("task-name-absolute", VALIDATE, _task(name="/tmp/x"), 2, "field 'task'"),
    Case("task-name-dot", VALIDATE, _task(name="."), 2, "field 'task'"),
    Case("group-name-dotdot", VALIDATE, _write("tasks/g.yaml", "group: ../g\ntasks: [lamp_3]\n"), 2, "field 'group'"),
    Case("prompt-proc-environ", VALIDATE, _task(prompt="/proc/self/environ"), 2, "outside the folders"),
    Case("prompt-dotdot", VALIDATE, lambda tmp: (_task(prompt="../secret.jinja")(tmp),
                                                 (tmp / "secret.jinja").write_text("{{ input }}")), 2,
         "outside the folders"),
    Case("prompt-run-time", RUN_MINE[:-4] + ("--model", "baseline:user-mean", "--out", "{tmp}/out"),
         _task(prompt="/proc/self/environ"), 2, "outside the folders"),
    Case("include-outside-folder", VALIDATE, lambda tmp: (_task(extra="include: ../base.yaml\n")(tmp),
                                                          (tmp / "base.yaml").write_text("split: dev\n")), 2,
         "field 'include'"),
    # ---- Jinja in prompts: clean errors at validate time
    Case("jinja-mro", VALIDATE, _task(prompt="p.jinja", template="{{ ''.__class__.__mro__ }}"), 2, "unsafe operation"),
    Case("jinja-subclasses", VALIDATE, _task(prompt="p.jinja", template="{{ input.__class__.__base__.__subclasses__() }}"),
         2, "unsafe operation"),
    Case("jinja-include", VALIDATE, _task(prompt="p.jinja", template="{% include '/etc/passwd' %}"), 2,
         "{% include %} is not allowed"),
    Case("jinja-import", VALIDATE, _task(prompt="p.jinja", template="{% import 'x.jinja' as x %}"), 2,
         "{% import %} is not allowed"),
    Case("jinja-from-import", VALIDATE, _task(prompt="p.jinja", template="{% from 'x' import y %}"), 2,
         "{% import %} is not allowed"),
    Case("jinja-extends", VALIDATE, _task(prompt="p.jinja", template="{% extends 'base' %}"), 2,
         "{% extends %} is not allowed"),
    Case("jinja-huge-range", VALIDATE, _task(prompt="p.jinja", template="{% for i in range(10**9) %}x{% endfor %}"),
         2, "range() too big"),
    Case("jinja-nested-range", VALIDATE,
         _task(prompt="p.jinja", template="{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}"),
         2, "range() too big"),
    Case("jinja-huge-repeat", VALIDATE, _task(prompt="p.jinja", template="{{ 'x' * 10**10 }}"), 2, "repetition too large"),
    Case("jinja-undefined", VALIDATE, _task(prompt="p.jinja", template="{{ input }} {{ no_such_variable }}"), 2,
         "'no_such_variable' is undefined"),
    Case("jinja-syntax", VALIDATE, _task(prompt="p.jinja", template="{{ input "), 2, "template syntax error"),
    Case("jinja-non-utf8", VALIDATE, lambda tmp: (_task(prompt="p.jinja")(tmp),
                                                  (tmp / "tasks" / "p.jinja").write_bytes(b"\xff\xfe{{ input }}")), 2,
         "not valid UTF-8"),
    # ---- numbers
    Case("gold-nan", SCORE, _golds("5", "NaN", "4"), 2, "gold rating 'NaN' is not a number within [1, 5]"),
    Case("gold-nan-literal", SCORE, _golds("", "", "", raw='{"task": "LaMP_3", "golds": [{"id": "3001", '
                                                           '"output": NaN}]}'), 2, "gold rating"),
    Case("gold-inf", SCORE, _golds("5", "1", "inf"), 2, "gold rating 'inf'"),
    Case("gold-out-of-range", SCORE, _golds("7", "1", "4"), 2, "gold rating '7' is not a number within [1, 5]"),
    Case("gold-not-a-number", SCORE, _golds("five", "1", "4"), 2, "record id '3001', field 'output'"),
    Case("n-boot-negative", (*SCORE[:-2], "--golds", str(O3), "--n-boot", "-5"), None, 2,
         "expected an integer within [0, 100000], got -5"),
    Case("n-boot-huge", (*SCORE[:-2], "--golds", str(O3), "--n-boot", str(10**12)), None, 2, "within [0, 100000]"),
    Case("n-boot-not-int", (*SCORE[:-2], "--golds", str(O3), "--n-boot", "many"), None, 2, "expected an integer"),
    Case("run-n-boot-negative", (*EVAL_RUN, "--out", "{tmp}/o", "--n-boot", "-1"), None, 2, "within [0, 100000]"),
    Case("run-sample-0", (*EVAL_RUN, "--out", "{tmp}/o", "--sample", "0"), None, 2, "expected an integer >= 1"),
    Case("run-limit-0", (*EVAL_RUN, "--out", "{tmp}/o", "--limit", "0"), None, 2, "expected an integer >= 1"),
    Case("run-batch-size-0", (*EVAL_RUN, "--out", "{tmp}/o", "--batch-size", "0"), None, 2, "expected an integer >= 1"),
    Case("run-max-tokens-0", (*EVAL_RUN, "--out", "{tmp}/o", "--max-tokens", "0"), None, 2, "expected an integer >= 1"),
    Case("run-k-0", (*EVAL_RUN, "--out", "{tmp}/o", "--k", "1,0"), None, 2, "--k values must be >= 1"),
    Case("run-unknown-retriever", (*EVAL_RUN, "--out", "{tmp}/o", "--retriever", "bm25,nope"), None, 2,
         "unknown retriever(s) ['nope']"),
    Case("run-k-not-int", (*EVAL_RUN, "--out", "{tmp}/o", "--k", "three"), None, 2, "--k expects comma-separated"),
    Case("recommend-beams-negative", ("recommend", "--model", "{tmp}/m", "--user", "1", "--beams", "-1"), None, 2,
         "argument --beams: expected an integer >= 1"),
    Case("recommend-k-0", ("recommend", "--model", "{tmp}/m", "--user", "1", "-k", "0"), None, 2,
         "argument -k: expected an integer >= 1"),
    Case("answer-empty-question", ("answer", "--user", "1", ""), None, 2, "expected text"),
    Case("answer-blank-question", ("answer", "--user", "1", "  \t "), None, 2, "expected text"),
    Case("answer-max-items-0", ("answer", "--user", "1", "--max-items", "0", "q?"), None, 2, "expected an integer >= 1"),
    # ---- readers (the first rows: cases that were already clean, kept so they stay so)
    Case("golds-missing-file", (*SCORE[:-2], "--golds", "{tmp}/nope.json"), None, 2, "nope.json: file not found"),
    Case("golds-empty-file", SCORE, _golds("", "", "", raw=""), 2, "golds.json: file is empty"),
    Case("golds-html-page", SCORE, _golds("", "", "", raw="<!DOCTYPE html><html><body>404</body></html>"), 2,
         "looks like an HTML page"),
    Case("golds-truncated-json", SCORE, _golds("", "", "", raw='{"task": "LaMP_3", "golds": [{"id": "3001"'), 2,
         "golds.json: invalid JSON at line 1"),
    Case("golds-wrong-task", SCORE, _golds("", "", "", raw='{"task": "LaMP_2", "golds": []}'), 2,
         "file is for LaMP_2, expected LaMP_3"),
    Case("golds-non-utf8", SCORE, _write("golds.json", b'{"task": "\xff"}'),
         2, "golds.json: not valid utf-8"),
    Case("golds-ids-mismatch", SCORE, _golds("", "", "", raw=json.dumps(
        {"task": "LaMP_3", "golds": [{"id": "9", "output": "4"}]})), 2, "gold id(s) have no prediction"),
    Case("score-unknown-task", ("eval", "score", "--task", "LaMP_9", "--golds", str(O3), "--predictions", str(O3)),
         None, 2, "unknown task 'LaMP_9'"),
    Case("task-unknown-key", VALIDATE, _task(extra="colour: blue\n"), 2, "unknown key(s) ['colour']"),
    Case("task-not-a-mapping", VALIDATE, _write("tasks/l.yaml", "- a\n- b\n"), 2, "expected a mapping at the top level"),
    Case("task-bad-yaml", VALIDATE, _write("tasks/y.yaml", "task: [unclosed\n"), 2, "y.yaml: cannot read YAML"),
    Case("task-missing-prompt", VALIDATE, _task(prompt="missing.jinja"), 2, "prompt template 'missing.jinja' not found"),
    Case("json-nested-deep", SCORE, _golds("", "", "", raw=DEEP), 2, "nested too deeply"),
    Case("json-5001-digit-id", SCORE, _golds("", "", "", raw='{"task": "LaMP_3", "golds": [{"id": ' + HUGE_ID
                                                             + ', "output": "4"}]}'), 2, "unreadable JSON"),
    Case("jsonl-5001-digit-id", ("data", "info", "--data", "{tmp}/shop.json"),
         _dataset("inter.jsonl", '{"user_id": ' + HUGE_ID + ', "item_id": "a", "timestamp": 1}\n'), 2,
         "inter.jsonl, record line 1"),
    Case("tsv-20mb-line", ("data", "info", "--data", "{tmp}/shop.json"),
         _dataset("inter.tsv", "user_id\titem_id\ttimestamp\nu1\ta\t1\nu2\t" + "x" * 20_000_000 + "\t2\n"), 2,
         "inter.tsv, record line 3: a field is longer than 16,777,216 characters"),
    Case("csv-nul-byte", ("data", "info", "--data", "{tmp}/shop.json"),
         _dataset("inter.csv", "user_id,item_id,timestamp\nu1,a,1\n\"u2,a,2\n"), 2, "inter.csv"),
    Case("task-yaml-non-utf8", ("eval", "ls", "--include-path", "{tmp}/tasks"),
         _write("tasks/bad.yaml", "task: caf\xe9\n".encode("latin-1")), 2, "bad.yaml: not valid UTF-8 at byte 9"),
    Case("task-yaml-non-utf8-validate", VALIDATE, _write("tasks/bad.yaml", b"task: \xff\xfe\n"), 2, "not valid UTF-8"),
    Case("dataset-config-json-non-utf8", ("data", "info", "--data", "{tmp}/cfg.json"),
         _write("cfg.json", b'{"format": "generic", "name": "caf\xe9"}'), 2, "cfg.json: not valid"),
    Case("dataset-config-json-deep", ("data", "info", "--data", "{tmp}/cfg.json"), _write("cfg.json", DEEP), 2,
         "cfg.json: JSON nested too deeply"),
    Case("recipe-config-non-utf8", ("train", "sasrec", "--config", "{tmp}/c.yaml"), _write("c.yaml", b"epochs: \xff\n"),
         2, "c.yaml: not valid UTF-8"),
    Case("report-results-list", ("eval", "report", "{tmp}/results.json"), _results([1, 2]), 2,
         "expected a results object from llmrec eval run, got a JSON list"),
    Case("report-results-no-variants", ("eval", "report", "{tmp}/results.json"), _results({"tasks": {"t": {"n": 1}}}),
         2, "record task t, field 'variants'"),
    Case("report-results-no-tasks", ("eval", "report", "{tmp}/results.json"), _results({"model": "x"}), 2,
         "field 'tasks'"),
    Case("report-results-bad-metric", ("eval", "report", "{tmp}/results.json"),
         _results({"tasks": {"t": {"variants": {"v": {"metrics": {"mae": {"value": "low"}}}}}}}), 2,
         "field 'variants.v.metrics.mae'"),
    # ---- a misspelt task argument is an error, not a task silently built with its defaults
    Case("eval-run-unknown-task-arg", (*EVAL_RUN, "--task-arg", "questoins=x.json", "--out", "{tmp}/out"), None, 2,
         "--task-arg ['questoins']: no selected task reads it; they read ['outputs', 'questions', 'task']",
         lambda tmp: not (tmp / "out").exists() or pytest.fail("output written")),
    Case("eval-run-task-file-unknown-dataset-arg", RUN_MINE,
         _write("tasks/mine.yaml", TASK.format(name="mine", prompt="prompts/lamp_3.jinja").replace(
             "{task: LaMP_3}", "{task: LaMP_3, recent_window: 5}")), 2,
         "mine: dataset_args ['recent_window'] are not read by builder 'lamp'; it takes ['outputs', 'questions', "
         "'task']"),
]

# Damaged model directories, SID tables, checkpoints and output folders of items build / train are the second
# table, tests/test_bad_model_input.py (MODEL_CASES): its rows damage a saved model copy before the command runs.
CASES: list[Case] = HARNESS_CASES


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if case.setup is not None:
        case.setup(tmp_path)
    argv = [a.format(tmp=tmp_path, fix=FIX) for a in case.argv]
    code, out, err = run_cli(argv, capsys)
    assert "Traceback" not in err, err
    assert code == case.code, (code, out, err[-2000:])
    assert case.message in out + err, (case.message, out[-2000:], err[-2000:])
    if code == 2 and err.startswith("llmrec: error:"):
        assert err.count("\n") == 1, err  # one line
    if case.check is not None:
        case.check(tmp_path)


def test_table_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# ---- the CLI-wide guard -----------------------------------------------------------------------------------------


def test_unexpected_errors_are_one_line_and_v_shows_the_traceback(monkeypatch, capsys):
    import llmrec.evaluation.commands as commands

    def boom(args):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(commands, "_ls", boom)
    code, out, err = run_cli(["eval", "ls"], capsys)
    assert code == 2
    assert err == "llmrec: error: RuntimeError: something unforeseen (run with -v for the traceback)\n"
    code, out, err = run_cli(["-v", "eval", "ls"], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err and "RuntimeError: something" in err

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "_ls", interrupted)
    assert run_cli(["eval", "ls"], capsys)[0] == 130


# ---- --out: never destroy, replace atomically --------------------------------------------------------------------


class EchoModel:
    """Answers '4'; logs each prompt it is asked (one line per prompt) to ``log`` when given; can crash."""

    name = "echo"

    def __init__(self, log: Path | None = None, delay: float = 0.0, fail: bool = False) -> None:
        self.log, self.delay, self.fail, self.calls = log, delay, fail, 0

    def generate(self, prompts, max_new_tokens):
        if self.fail:
            raise RuntimeError("simulated crash")
        time.sleep(self.delay)
        self.calls += len(prompts)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write("".join("x\n" for _ in prompts))
        return ["4"] * len(prompts)


def run_cfg(out: Path, **kw):
    from llmrec.evaluation.runner import RunConfig

    base = dict(tasks=("lamp_3",), out=str(out), model="echo", task_args={"questions": str(Q3), "outputs": str(O3)},
                n_boot=0, progress=False, batch_size=1, method="generate", retrievers=("none",), report=False)
    base.update(kw)
    return RunConfig(**base)


def test_out_onto_a_file_is_refused_and_overwrite_replaces_it(tmp_path):
    from llmrec.evaluation.runner import run

    target = tmp_path / "results.json"
    target.write_text(PRECIOUS)
    with pytest.raises(ConfigError, match="existing file that llmrec did not write is in the way"):
        run(run_cfg(target), model=EchoModel())
    assert target.read_text() == PRECIOUS
    with pytest.raises(RuntimeError):  # --overwrite, but the run fails: the old data is still there
        run(run_cfg(target, overwrite=True), model=EchoModel(fail=True))
    assert target.read_text() == PRECIOUS
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp folder left behind
    run(run_cfg(target, overwrite=True), model=EchoModel())
    assert target.is_dir() and json.loads((target / "results.json").read_text())["tasks"]["lamp_3"]["n"] == 3


def test_out_onto_a_foreign_folder_is_refused_and_an_own_output_is_reused(tmp_path):
    from llmrec.evaluation.runner import EVAL_MARKER, run

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text(PRECIOUS)
    with pytest.raises(ConfigError, match="not empty and was not written by llmrec"):
        run(run_cfg(out), model=EchoModel())
    assert (out / "notes.txt").read_text() == PRECIOUS and len(list(out.iterdir())) == 1
    run(run_cfg(out, overwrite=True), model=EchoModel())
    assert not (out / "notes.txt").exists() and (out / EVAL_MARKER).is_file()
    model = EchoModel()
    run(run_cfg(out), model=model)  # our own output: no --overwrite needed, the cache is reused
    assert model.calls == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    run(run_cfg(empty), model=EchoModel())  # an empty folder is fine
    assert (empty / "results.json").is_file()


def test_report_rewrites_its_own_report_and_overwrite_replaces_others(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps({"tasks": {}}))
    assert run_cli(["eval", "report", str(tmp_path / "results.json")], capsys)[0] == 0
    assert run_cli(["eval", "report", str(tmp_path / "results.json")], capsys)[0] == 0  # its own report: fine
    (tmp_path / "notes.html").write_text(PRECIOUS)
    argv = ["eval", "report", str(tmp_path / "results.json"), "--out", str(tmp_path / "notes.html")]
    assert run_cli(argv, capsys)[0] == 2 and (tmp_path / "notes.html").read_text() == PRECIOUS
    assert run_cli([*argv, "--overwrite"], capsys)[0] == 0
    assert (tmp_path / "notes.html").read_text().startswith("<!DOCTYPE html>")


def test_cli_overwrite_flag(tmp_path, capsys):
    target = tmp_path / "results.json"
    target.write_text(PRECIOUS)
    code, out, err = run_cli([*EVAL_RUN, "--out", str(target), "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads(out)["results"]["lamp_3"]["baseline:user-mean"]["mae"] == pytest.approx(1.5)
    assert (target / "results.json").is_file()


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_dir_swap_and_recovery_after_a_kill(tmp_path, monkeypatch, exchange):
    import llmrec.io as io

    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    out = tmp_path / "model"
    with io.atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    with io.atomic_dir(out) as tmp:
        (tmp / "v").write_text("2")
        assert (out / "v").read_text() == "1"  # the old output stays until the new one is complete
    assert (out / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # a kill between the two renames of the fallback swap: only .model.old is left
    os.replace(out, tmp_path / ".model.old")
    with io.atomic_dir(out) as tmp:  # the next writer first puts the old output back
        assert (out / "v").read_text() == "2"
        (tmp / "v").write_text("3")
    assert (out / "v").read_text() == "3" and not (tmp_path / ".model.old").exists()


def test_eval_run_recovers_a_parked_output(tmp_path):
    from llmrec.evaluation.runner import run

    out = tmp_path / "o"
    run(run_cfg(out), model=EchoModel())
    os.replace(out, tmp_path / ".o.old")
    model = EchoModel()
    run(run_cfg(out), model=model)
    assert model.calls == 0 and not (tmp_path / ".o.old").exists()  # restored, cache reused


# ---- names and prompts from task files ---------------------------------------------------------------------------


def test_task_name_with_dotdot_writes_nothing_outside(tmp_path):
    from llmrec.evaluation.runner import run

    _task(name="../../escaped_task")(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ConfigError, match=r"mine.yaml: field 'task': '../../escaped_task' cannot be used"):
        run(run_cfg(out, tasks=("../../escaped_task",), include_paths=(str(tmp_path / "tasks"),)), model=EchoModel())
    assert not out.exists() and sorted(p.name for p in tmp_path.rglob("*")) == ["mine.yaml", "tasks"]


def test_prompt_outside_its_folders_is_refused_even_through_a_symlink(tmp_path, monkeypatch):
    from llmrec.evaluation.tasks import validate_paths

    secret = tmp_path / "secret.txt"
    secret.write_text("API_KEY=hunter2")
    _task(prompt="p.jinja")(tmp_path)
    (tmp_path / "tasks" / "p.jinja").symlink_to(secret)
    errors = validate_paths([tmp_path / "tasks"])
    assert "outside the folders" in errors[str(tmp_path / "tasks" / "mine.yaml")]
    assert "hunter2" not in json.dumps(errors)
    # the same template in a declared prompts folder is fine
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "q.jinja").write_text("{{ input }}")
    (tmp_path / "tasks" / "mine.yaml").write_text(TASK.format(name="mine", prompt="q.jinja"))
    assert "mine.yaml" in " ".join(validate_paths([tmp_path / "tasks"]))
    monkeypatch.setenv("LLMREC_PROMPTS", str(tmp_path / "prompts"))
    (tmp_path / "tasks" / "mine.yaml").write_text(TASK.format(name="mine", prompt="prompts/q.jinja"))
    assert validate_paths([tmp_path / "tasks"]) == {}


def test_validate_renders_prompts_with_a_sample(tmp_path):
    from llmrec.evaluation.tasks import validate_paths

    # fine with a profile, broken without one (the no-profile variant): found by the second sample
    _task(prompt="p.jinja", template="{{ profile[0].text }} {{ input }}")(tmp_path)
    errors = validate_paths([tmp_path / "tasks"])
    assert "record sample example" in errors[str(tmp_path / "tasks" / "mine.yaml")]
    assert validate_paths() == {}  # every built-in task renders


# ---- the prediction cache ----------------------------------------------------------------------------------------


def _lamp_files(folder: Path, n: int) -> tuple[Path, Path]:
    folder.mkdir()
    q = [{"id": str(i), "input": f"review {i}", "profile": [{"id": f"p{i}", "text": "ok", "score": "3"}]}
         for i in range(n)]
    o = {"task": "LaMP_3", "golds": [{"id": str(i), "output": str(1 + i % 5)} for i in range(n)]}
    (folder / "q.json").write_text(json.dumps(q))
    (folder / "o.json").write_text(json.dumps(o))
    return folder / "q.json", folder / "o.json"


def _concurrent_worker(out: str, q: str, o: str, log: str) -> None:
    from llmrec.evaluation.runner import run

    run(run_cfg(Path(out), task_args={"questions": q, "outputs": o}), model=EchoModel(Path(log), delay=0.02))


def test_concurrent_runs_share_the_cache_without_duplicates(tmp_path):
    n = 12
    q, o = _lamp_files(tmp_path / "lamp", n)
    out, log = tmp_path / "out", tmp_path / "prompts.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_concurrent_worker, args=(str(out), str(q), str(o), str(log))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert len(log.read_text().splitlines()) == n  # each example predicted once over all four runs
    (cache,) = (out / "cache" / "lamp_3").glob("*.jsonl")
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert sum("header" in x for x in lines) == 1 and lines[0].keys() == {"header"}
    ids = [x["id"] for x in lines[1:]]
    assert sorted(ids) == sorted(str(i) for i in range(n))  # no duplicates, none missing
    assert json.loads((out / "results.json").read_text())["tasks"]["lamp_3"]["n"] == n


def test_damaged_cache_lines_are_recomputed_with_a_warning(tmp_path, caplog):
    from llmrec.evaluation.runner import run

    out = tmp_path / "out"
    run(run_cfg(out), model=EchoModel())
    (cache,) = (out / "cache" / "lamp_3").glob("*.jsonl")
    lines = cache.read_text().splitlines()  # header, 3001, 3002, 3003
    cache.write_text("\n".join([lines[0], "42", '{"id": "3002"}', lines[3], '{"id": "300']) )
    model = EchoModel()
    with caplog.at_level("WARNING"):
        res = run(run_cfg(out), model=model)
    assert model.calls == 2  # 3001 (a bare number) and 3002 (no output) again; the torn tail is skipped
    text = caplog.text
    assert f"{cache}: line 2: unreadable cache record" in text and f"{cache}: line 3: unreadable" in text
    assert f"{cache}: line 5: ignoring an incomplete line" in text
    assert res["tasks"]["lamp_3"]["variants"]["no-profile/gen"]["timings"]["predicted_now"] == 2
    model = EchoModel()
    run(run_cfg(out), model=model)
    assert model.calls == 0  # the recomputed records were appended and now load


# ---- numbers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gold", ["NaN", "nan", "inf", "-inf", "7", "0", "5.5"])
def test_gold_ratings_must_be_finite_and_in_range(tmp_path, gold):
    from llmrec.evaluation.scoring import score_files

    _golds("5", gold, "4")(tmp_path)
    with pytest.raises(DataError) as info:
        score_files("LaMP_3", tmp_path / "golds.json", O3, n_boot=0)
    err = info.value
    assert err.path == str(tmp_path / "golds.json") and err.record == "id '3002'" and err.field == "output"


def test_gold_ratings_are_checked_in_eval_run_too(tmp_path):
    from llmrec.evaluation.runner import run

    _golds("5", "1", "Infinity")(tmp_path)
    with pytest.raises(DataError, match="gold rating 'Infinity'"):
        run(run_cfg(tmp_path / "out", task_args={"questions": str(Q3), "outputs": str(tmp_path / "golds.json")}),
            model=EchoModel())


def test_outputs_are_always_valid_json(tmp_path, capsys):
    from llmrec.io import dumps_json, write_json_atomic

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))

    obj = {"mae": float("nan"), "ci": [float("inf"), -float("inf"), 1.5]}
    assert strict(dumps_json(obj)) == {"mae": None, "ci": [None, None, 1.5]}
    write_json_atomic(tmp_path / "r.json", obj)
    assert strict((tmp_path / "r.json").read_text())["mae"] is None
    # every prediction unparseable: metrics may be undefined, the printed result is still strict JSON
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"task": "LaMP_3", "golds": [{"id": i, "output": "?"} for i in ("3001", "3002", "3003")]}))
    code, out, err = run_cli(["eval", "score", "--task", "LaMP_3", "--golds", str(O3), "--predictions", str(preds)],
                             capsys)
    assert code == 0, err
    strict(out)
