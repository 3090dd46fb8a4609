"""Bad model input (issue 17, model / training / items half): damaged model directories, semantic-ID tables and
checkpoints, and outputs that would destroy data. Every case is a row of MODEL_CASES: a damage applied to a copy
of a saved tiny model, SID table or output path, a command line, the exit code and a fragment of the one error
line. A tiny PersonalLM and its data are saved once per module and copied per case."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from helpers import write_grouplens

from llmrec.cli import main
from llmrec.errors import ConfigError
from llmrec.io import atomic_dir, guard_output

# --------------------------------------------------------------------------------------------- damage helpers


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        file = root / rel
        data = file.read_bytes()
        file.write_bytes(data[: int(len(data) * keep)])
    return damage


def empty(rel: str) -> Callable[[Path], None]:
    return truncate(rel, 0.0)


def remove(rel: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).unlink()
    return damage


def write_json(rel: str, value: object) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).write_text(json.dumps(value), encoding="utf-8")
    return damage


def edit_json(rel: str, **changes: object) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        file = root / rel
        file.write_text(json.dumps({**json.loads(file.read_text(encoding="utf-8")), **changes}), encoding="utf-8")
    return damage


def pickle_adapter(root: Path) -> None:
    """adapter_model.safetensors -> adapter_model.bin (the same tensors, torch.save'd: a pickle)."""
    from safetensors.torch import load_file

    torch.save(load_file(str(root / "adapter_model.safetensors")), root / "adapter_model.bin")
    (root / "adapter_model.safetensors").unlink()


def pickle_weights(root: Path) -> None:
    """A base model folder's model.safetensors -> pytorch_model.bin (a pickle)."""
    from safetensors.torch import load_file

    torch.save(load_file(str(root / "model.safetensors")), root / "pytorch_model.bin")
    (root / "model.safetensors").unlink()


def add_file(rel: str, content: bytes = b"\x80\x04K*.") -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    return damage


def nothing(root: Path) -> None:
    pass


# Output paths (the damage builds what is already at --out; the check runs after the command)
def a_file(out: Path) -> None:
    out.write_text('{"precious": true}\n')


def a_foreign_folder(out: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")


def an_empty_folder(out: Path) -> None:
    out.mkdir()


def a_previous_table(out: Path) -> None:
    """A table from an earlier `llmrec items build`, plus a stale file that must go with it."""
    shutil.copytree(SAVED["sids"], out)
    (out / "stale.txt").write_text("from the old table\n")


def a_previous_recipe_output(out: Path) -> None:
    out.mkdir()
    (out / "run.json").write_text("{}\n")
    (out / "stale.txt").write_text("from the old run\n")


def file_intact(out: Path) -> None:
    assert out.read_text() == '{"precious": true}\n'


def folder_intact(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes\n"


def is_new_table(out: Path) -> None:
    from llmrec.items.semantic_ids import SemanticIds

    assert out.is_dir() and not (out / "stale.txt").exists() and not (out / "notes.txt").exists()
    assert len(SemanticIds.load(out)) == 5
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary or parked copies left beside it


def normal_permissions(out: Path) -> None:
    is_new_table(out)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    for file in out.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~mask, file.name


def is_sasrec_output(out: Path) -> None:
    assert not (out / "stale.txt").exists() and (out / "metrics.json").is_file() and (out / "run.json").is_file()


# ------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    id: str
    target: str  # a copy of the saved "model" (PersonalLM), "sids" (table), "sasrec" or "tiny" (base model folder);
    # or "out" (a path to write to)
    damage: Callable[[Path], None]
    argv: tuple[str, ...]  # {model} {sids} {out} {data} {tiny} are filled in
    code: int = 2
    fragment: str = ""  # in the one error line (exit code 2)
    check: Callable[[Path], None] | None = None  # on the target, after the command


RECOMMEND = ("recommend", "--model", "{model}", "--user", "30", "-k", "2", "--json", "--dtype", "fp32",
             "--threads", "1")
ANSWER = ("answer", "--model", "{model}", "--user", "30", "Which genre?", "--dtype", "fp32", "--threads", "1")
FUSED = (*RECOMMEND, "--sasrec", "{sasrec}")
BASE_ANSWER = ("answer", "--model", "{tiny}", "--data", "{data}", "--user", "30", "Which genre?", "--dtype", "fp32",
               "--threads", "1")
INFO = ("items", "info", "{sids}")
BUILD = ("items", "build", "--data", "{data}", "--out", "{out}", "--levels", "1", "--codebook-size", "2", "--json",
         "--threads", "1")
SASREC = ("train", "sasrec", "--config", "tiny/sasrec", "--out", "{out}", "--train.epochs", "1")
GENREC = ("train", "genrec", "--config", "tiny/genrec", "--model.base_model", "{tiny}", "--out", "{out}")
SOFT = ("train", "soft-prompt", "--config", "tiny/soft-prompt", "--model.base_model", "{tiny}", "--out", "{out}")

MODEL_CASES: list[Case] = [
    # damaged model directories: one line naming the file (recommend, and the text commands through the same check)
    Case("adapter-weights-truncated", "model", truncate("adapter_model.safetensors"), RECOMMEND,
         fragment="adapter_model.safetensors: file is truncated"),
    Case("adapter-weights-empty", "model", empty("adapter_model.safetensors"), RECOMMEND,
         fragment="adapter_model.safetensors: file is empty"),
    Case("adapter-weights-missing", "model", remove("adapter_model.safetensors"), RECOMMEND,
         fragment="adapter_model.safetensors: file is missing"),
    Case("adapter-weights-not-safetensors", "model", add_file("adapter_model.safetensors", b"<html>oops</html>"),
         RECOMMEND, fragment="adapter_model.safetensors: file is truncated or not a safetensors file"),
    Case("adapter-config-truncated", "model", truncate("adapter_config.json"), RECOMMEND,
         fragment="adapter_config.json: not valid JSON"),
    Case("adapter-config-missing", "model", remove("adapter_config.json"), RECOMMEND,
         fragment="adapter_config.json: file is missing"),
    Case("adapter-config-a-list", "model", write_json("adapter_config.json", [1, 2]), RECOMMEND,
         fragment="adapter_config.json: expected a JSON object, got array"),
    Case("adapter-config-not-peft", "model", write_json("adapter_config.json", {"r": 8}), RECOMMEND,
         fragment="adapter_config.json: no 'peft_type'"),
    Case("adapter-does-not-fit-base", "model", edit_json("adapter_config.json", r=4, lora_alpha=8), RECOMMEND,
         fragment="the adapter does not load onto the base model"),
    Case("catalogue-truncated", "model", truncate("catalogue.json"), RECOMMEND,
         fragment="catalogue.json: not valid JSON"),
    Case("catalogue-missing", "model", remove("catalogue.json"), RECOMMEND, fragment="catalogue.json: file is missing"),
    Case("catalogue-wrong-shape", "model", write_json("catalogue.json", {"1": ["Toy Story"]}), RECOMMEND,
         fragment="catalogue.json: item '1': expected a title string"),
    Case("tokenizer-json-truncated", "model", truncate("tokenizer.json"), RECOMMEND,
         fragment="tokenizer.json: not valid JSON"),
    Case("tokenizer-json-wrong-shape", "model", write_json("tokenizer.json", {"model": 1}), RECOMMEND,
         fragment="tokenizer.json: the saved tokenizer does not load"),
    Case("tokenizer-config-missing", "model", remove("tokenizer_config.json"), RECOMMEND,
         fragment="tokenizer_config.json: file is missing"),
    Case("llmrec-config-truncated", "model", truncate("llmrec_config.json"), RECOMMEND,
         fragment="llmrec_config.json: not valid JSON"),
    Case("not-a-model-dir", "model", remove("llmrec_config.json"), RECOMMEND,
         fragment="not a PersonalLM directory (no llmrec_config.json)"),
    Case("manifest-truncated", "model", truncate("model.json"), RECOMMEND, fragment="model.json: not valid JSON"),
    Case("manifest-dataset-path-escapes", "model",
         edit_json("model.json", dataset={"name": "x", "config": "../../../etc/passwd"}), RECOMMEND,
         fragment="field 'dataset.config'"),
    Case("model-sid-table-truncated", "model", truncate("sids/semantic_ids.json"), RECOMMEND,
         fragment="semantic_ids.json: not valid JSON"),
    Case("model-sid-weights-empty", "model", empty("sids/semantic_ids.safetensors"), RECOMMEND,
         fragment="semantic_ids.safetensors: file is empty"),
    Case("pickled-adapter-refused", "model", pickle_adapter, RECOMMEND,
         fragment="adapter_model.bin: pickle-based weights are refused"),
    Case("pickled-adapter-allowed", "model", pickle_adapter, (*RECOMMEND, "--allow-pickle"), code=0),
    Case("stray-pickle-refused", "model", add_file("extra/state.pkl"), RECOMMEND,
         fragment="state.pkl: pickle-based weights are refused"),
    Case("answer-adapter-truncated", "model", truncate("adapter_model.safetensors"), ANSWER,
         fragment="adapter_model.safetensors: file is truncated"),
    Case("undamaged-model-loads", "model", nothing, RECOMMEND, code=0),
    # a base model folder (answer/profile --model DIR) holding pickled weights only
    Case("base-model-pickled-refused", "tiny", pickle_weights, BASE_ANSWER,
         fragment="pytorch_model.bin: pickle-based weights are refused"),
    Case("base-model-pickled-allowed", "tiny", pickle_weights, (*BASE_ANSWER, "--allow-pickle"), code=0),
    # a SASRec folder for shallow fusion (`recommend --sasrec DIR`)
    Case("sasrec-weights-truncated", "sasrec", truncate("model.safetensors"), FUSED,
         fragment="model.safetensors: file is truncated"),
    Case("sasrec-items-wrong-shape", "sasrec", write_json("items.json", {"1": 1}), FUSED,
         fragment="items.json: expected a JSON array, got object"),
    Case("sasrec-undamaged-fuses", "sasrec", nothing, FUSED, code=0),
    # semantic-ID tables of the wrong shape: `llmrec items info`
    Case("sid-json-a-list", "sids", write_json("semantic_ids.json", [1, 2, 3]), INFO,
         fragment="semantic_ids.json: expected a JSON object, got array"),
    Case("sid-levels-not-int", "sids", edit_json("semantic_ids.json", levels="two"), INFO, fragment="field 'levels'"),
    Case("sid-sizes-wrong-length", "sids", edit_json("semantic_ids.json", codebook_sizes=[4]), INFO,
         fragment="field 'codebook_sizes'"),
    Case("sid-item-ids-not-a-list", "sids", edit_json("semantic_ids.json", item_ids={"1": 0}), INFO,
         fragment="field 'item_ids'"),
    Case("sid-codes-out-of-range", "sids", edit_json("semantic_ids.json", codebook_sizes=[1, 1, 1]), INFO,
         fragment="the table does not hold together"),
    Case("sid-too-few-item-ids", "sids", edit_json("semantic_ids.json", item_ids=["1"]), INFO,
         fragment="the table does not hold together"),
    Case("sid-weights-truncated", "sids", truncate("semantic_ids.safetensors"), INFO,
         fragment="semantic_ids.safetensors: file is truncated"),
    Case("sid-config-missing", "sids", remove("config.json"), INFO, fragment="config.json: file is missing"),
    Case("sid-not-a-table", "sids", remove("semantic_ids.json"), INFO, fragment="not a semantic-ID table"),
    # outputs: never destroy data llmrec did not write; replace its own outputs atomically
    Case("build-out-onto-a-file", "out", a_file, BUILD, fragment="an existing file that llmrec did not write is in the way",
         check=file_intact),
    Case("build-out-onto-a-foreign-folder", "out", a_foreign_folder, BUILD,
         fragment="is not empty and was not written by llmrec; choose another path or pass --overwrite", check=folder_intact),
    Case("build-out-onto-its-previous-table", "out", a_previous_table, BUILD, code=0, check=is_new_table),
    Case("build-out-onto-an-empty-folder", "out", an_empty_folder, BUILD, code=0, check=is_new_table),
    Case("build-overwrite-a-foreign-folder", "out", a_foreign_folder, (*BUILD, "--overwrite"), code=0,
         check=is_new_table),
    Case("build-overwrite-a-file", "out", a_file, (*BUILD, "--overwrite"), code=0, check=is_new_table),
    Case("build-out-permissions", "out", nothing, BUILD, code=0, check=normal_permissions),
    Case("sasrec-out-onto-a-file", "out", a_file, SASREC, fragment="an existing file that llmrec did not write is in the way",
         check=file_intact),
    Case("genrec-out-onto-a-foreign-folder", "out", a_foreign_folder, GENREC, fragment="not written by llmrec",
         check=folder_intact),
    Case("soft-prompt-out-onto-a-foreign-folder", "out", a_foreign_folder, SOFT, fragment="not written by llmrec",
         check=folder_intact),
    Case("sasrec-out-onto-its-previous-output", "out", a_previous_recipe_output, SASREC, code=0,
         check=is_sasrec_output),
    Case("sasrec-overwrite-a-foreign-folder", "out", a_foreign_folder, (*SASREC, "--overwrite"), code=0,
         check=is_sasrec_output),
]

SAVED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Path]:
    """A tiny PersonalLM (semantic IDs over a 5-item MovieLens folder, saved with its data), its SID table and a
    tiny untrained SASRec over the same items."""
    import numpy as np

    from llmrec.data import load_dataset
    from llmrec.items.semantic_ids import SemanticIds
    from llmrec.lm.personal import PersonalLM, PersonalLMConfig
    from llmrec.users.sequence import SequenceEncoder, SequenceEncoderConfig

    root = tmp_path_factory.mktemp("bad-model")
    data = load_dataset(write_grouplens(root / "ml"))
    items = list(data.items)
    sids = SemanticIds.from_quantized(items, np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0]]), (2, 2))
    cfg = PersonalLMConfig(base_model=str(tiny_llama_dir), dtype="fp32", max_history=4, sid_init="random")
    PersonalLM.create(sids, data.items, cfg).save(root / "model", data=data)
    torch.manual_seed(0)
    SequenceEncoder(SequenceEncoderConfig(n_items=len(items), d_model=16, n_heads=2, max_len=8), items).save(
        root / "sasrec")
    SAVED.update(model=root / "model", sids=root / "model" / "sids", sasrec=root / "sasrec", data=root / "ml",
                 tiny=tiny_llama_dir)
    return SAVED


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_model_case(case: Case, saved: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = {"data": saved["data"], "tiny": saved["tiny"], "out": tmp_path / "out", "model": saved["model"],
             "sasrec": saved["sasrec"]}
    if case.target == "out":
        target = paths["out"]
    else:
        target = tmp_path / case.target
        shutil.copytree(saved[case.target], target)
        paths[case.target] = target
    case.damage(target)
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in case.argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == case.code, err
    if case.code == 2:
        errors = [line for line in err.splitlines() if line.startswith("llmrec: error:")]
        assert len(errors) == 1 and case.fragment in errors[0], err
        assert "Traceback" not in err
    if case.check is not None:
        case.check(target)


# -------------------------------------------------------------------------------- library-level guarantees
def test_personal_lm_save_guards_and_keeps_the_old_model_until_the_new_is_complete(saved, tmp_path, monkeypatch):
    from llmrec.lm.averaging import write_averaged_model
    from llmrec.lm.personal import PersonalLM

    plm = PersonalLM.load(saved["model"], dtype="fp32")
    foreign = tmp_path / "foreign"
    a_foreign_folder(foreign)
    with pytest.raises(ConfigError, match="not written by llmrec"):
        plm.save(foreign)
    folder_intact(foreign)
    with pytest.raises(ConfigError, match="not written by llmrec"):  # scripts/average_checkpoints.py --out
        write_averaged_model(saved["model"], [saved["model"], saved["model"]], foreign)
    folder_intact(foreign)
    plm.save(foreign, overwrite=True)
    assert PersonalLM.load(foreign, dtype="fp32").item_ids == plm.item_ids
    # replacing its own previous output: a save that fails half-way leaves the previous model as it was
    before = {p.name: p.read_bytes() for p in foreign.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(plm.tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        plm.save(foreign)
    assert {p.name: p.read_bytes() for p in foreign.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".foreign.*"))


def test_guard_output_and_an_interrupted_swap(tmp_path):
    ours = lambda p: (p / "mine").is_file()  # noqa: E731
    guard_output(tmp_path / "new", overwrite=False, ours=ours)
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "mine").write_text("x")
    guard_output(tmp_path / "own", overwrite=False, ours=ours)
    a_file(tmp_path / "f")
    with pytest.raises(ConfigError, match=r"f: an existing file that llmrec did not write.*--overwrite"):
        guard_output(tmp_path / "f", overwrite=False, ours=ours)
    guard_output(tmp_path / "f", overwrite=True, ours=ours)
    # a kill between atomic_dir's two renames leaves the previous output parked as .NAME.old: it comes back
    os.replace(tmp_path / "own", tmp_path / ".own.old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "own") as tmp:
            assert (tmp_path / "own" / "mine").is_file()  # restored before the new output is written
            (tmp / "half").write_text("half-written")
            raise RuntimeError("killed")
    assert (tmp_path / "own" / "mine").read_text() == "x" and not (tmp_path / ".own.old").exists()
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["mine"] and not list(tmp_path.glob(".own.*"))


# ------------------------------------------------------------------------------------------------ checkpoints
def _complete_checkpoint(path: Path, step: int) -> Path:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.zeros(3)}, str(path / "adapter_model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


CHECKPOINT_DAMAGE = {
    "no-trainer-state": remove("trainer_state.json"),
    "trainer-state-truncated": truncate("trainer_state.json"),
    "weights-truncated": truncate("adapter_model.safetensors", 0.9),
    "weights-missing": remove("adapter_model.safetensors"),
    "optimizer-missing": remove("optimizer.pt"),
    "optimizer-empty": empty("optimizer.pt"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_resume_skips_an_incomplete_newer_checkpoint(damage, tmp_path, caplog):
    from llmrec.training.checkpoints import last_complete_checkpoint

    _complete_checkpoint(tmp_path / "checkpoint-2", 2)
    CHECKPOINT_DAMAGE[damage](_complete_checkpoint(tmp_path / "checkpoint-10", 10))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert "skipping checkpoint" in caplog.text and "checkpoint-10" in caplog.text
    CHECKPOINT_DAMAGE[damage](tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(tmp_path) is None  # nothing complete: start over, never crash
    assert last_complete_checkpoint(tmp_path / "missing") is None


def test_a_run_killed_while_saving_a_checkpoint_resumes_from_the_previous_one_exactly(saved, tmp_path):
    """Uninterrupted 4 steps (checkpoints 2 and 4), then checkpoint-4 damaged as a kill mid-save leaves it: the
    rerun resumes from checkpoint-2 and ends with the same weights as the uninterrupted run."""
    import numpy as np
    from safetensors.torch import load_file

    from llmrec.data import load_dataset
    from llmrec.items import SemanticIds

    items = load_dataset("ml-100k").item_ids
    rng = np.random.default_rng(0)
    SemanticIds.from_quantized(items, np.stack([rng.integers(0, 8, len(items)), rng.integers(0, 8, len(items))], 1),
                               (8, 8)).save(tmp_path / "sids")
    out = tmp_path / "genrec"
    argv = ["train", "genrec", "--config", "tiny/genrec", "--model.base_model", str(saved["tiny"]), "--sids",
            str(tmp_path / "sids"), "--model.sid_init", "random", "--out", str(out), "--train.max_steps", "4",
            "--train.eval_steps", "2", "--test.skip"]
    assert main(argv) == 0
    uninterrupted = load_file(str(out / "adapter_model.safetensors"))
    ckpt = tmp_path / "genrec.checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    (ckpt / "checkpoint-4" / "trainer_state.json").unlink()  # the kill: weights half-written, state never
    truncate("adapter_model.safetensors")(ckpt / "checkpoint-4")
    assert main(["train", "genrec", "--config", str(out / "config.yaml")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["resumed_from"] == str(ckpt / "checkpoint-2") and results["train"]["steps"] == 4
    resumed = load_file(str(out / "adapter_model.safetensors"))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
