"""Every command in README.md runs (litgpt's test_readme.py pattern).

The bash and python blocks run in README order in one scratch folder, with the tiny random model where the
README names a real one and small budgets appended (later flags win): `--config smollm2-135m/genrec` becomes
`--config tiny/genrec --model.base_model TINY` and so on. `make` and `pip install` lines set up an environment,
so they are checked against the Makefile and pyproject instead of run; `accelerate launch` runs as 2-process DDP
on CPU in its own test. All three run some 20 commands (minutes), so they are marked slow.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SECTIONS = ["The two commands", "Install with pip", "Quickstart", "Bring your own data", "Recipes", "Python API",
            "Evaluation harness", "GPU and multi-GPU", "Results at a glance", "Reference", "Layout", "Cite and licence"]

# README config -> tiny config; {tiny} is the tiny model folder
CONFIGS = {
    "smollm2-135m/genrec": ["tiny/genrec", "--model.base_model", "{tiny}"],
    "smollm2-135m/soft-prompt": ["tiny/soft-prompt", "--model.base_model", "{tiny}"],
    "sasrec/ml-100k": ["tiny/sasrec"],
    "smollm2-135m/genrec-pref": ["tiny/genrec-pref"],  # its base model is the --init model's
    "smollm2-135m/profile-dpo": ["tiny/profile-dpo", "--base_model", "{tiny}"],
}
# appended to a recipe's command so it stays seconds-long whatever the README asks for
BUDGETS = {
    "genrec": ["--users", "30", "--train.max_steps", "2", "--train.eval_users", "4", "--test.users", "4"],
    "soft-prompt": ["--users", "30", "--train.max_steps", "2", "--questions.train_per_task", "4",
                    "--questions.test_per_task", "2", "--encoder.epochs", "1", "--soft.align_epochs", "1",
                    "--encoder.item_vectors", "none"],
    "sasrec": ["--users", "40"],
    "genrec-pref": ["--users", "30", "--train.max_steps", "2"],
    "profile-dpo": [],  # tiny/profile-dpo is seconds-long already
}


def fenced(lang: str, text: str | None = None) -> list[str]:
    text = README.read_text(encoding="utf-8") if text is None else text
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[list[str]]:
    """Shell lines of a block (continuations joined, comments dropped) as argv lists."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def adapt(argv: list[str], tiny: Path) -> list[str]:
    """A README command as the test runs it: llmrec via this interpreter, the tiny model, small budgets."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config" and argv[i + 1] in CONFIGS:
            out += ["--config", *(a.format(tiny=tiny) for a in CONFIGS[argv[i + 1]])]
            i += 2
            continue
        if arg == "--model" and argv[i + 1] == "smollm2-135m":
            out += ["--model", str(tiny)]
            i += 2
            continue
        out.append(arg)
        i += 1
    if out[:2] == ["llmrec", "train"]:
        out += BUDGETS[out[2]]
    if out[:3] == ["llmrec", "eval", "run"]:
        out += ["--sample", "8", "--n-boot", "50"]
    if out[0] == "llmrec":
        out = [sys.executable, "-m", "llmrec.cli", *out[1:]]
    return out


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def _run(argv: list[str], cwd: Path, shown: str) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README command failed: {shown}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_readme_shape():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == SECTIONS
    assert "<!-- results:begin -->" in text and "<!-- results:end -->" in text


def test_readme_links_resolve():
    """Every relative link in the README points at a file in the repository (one click to each reference)."""
    text = README.read_text(encoding="utf-8")
    links = [m.split("#")[0] for m in re.findall(r"\]\(([^)#][^)]*)\)", text) if not m.startswith("http")]
    assert {"eval/RESULTS.md", "llmrec/recipes/configs/README.md", "llmrec/lm/MODEL_DIR.md", "eval/README.md",
            "llmrec/ERRORS.md", "LICENSE"} <= set(links)
    for link in links:
        assert (REPO / link).exists(), link


def test_setup_commands_exist():
    """`make` targets are in the Makefile; the pip lines install the Makefile's torch and this project."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    pinned = re.search(r"^TORCH_SPEC \?= (\S+)", makefile, flags=re.M).group(1)
    seen = {"make": 0, "pip": 0}
    for block in fenced("bash"):
        for argv in commands(block):
            if argv[0] == "make":
                assert re.search(rf"^{argv[1]}:", makefile, flags=re.M), argv
                seen["make"] += 1
            elif argv[:2] == ["pip", "install"]:
                pkg = argv[2]
                assert pkg in (pinned, ".") or pkg.endswith(".whl"), argv
                assert (REPO / "pyproject.toml").exists()
                seen["pip"] += 1
    assert seen == {"make": 2, "pip": 2}


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory, tiny_llama_dir) -> Path:
    """Run every bash and python block in README order; returns the scratch folder."""
    from helpers import write_lamp

    text = README.read_text(encoding="utf-8")
    work = tmp_path_factory.mktemp("readme")
    # the LaMP files the harness block reads (the README assumes the user downloaded them): 3 LaMP_3 questions
    questions, outputs = write_lamp(work / "lamp")
    questions.rename(work / "dev_questions.json")
    outputs.rename(work / "dev_outputs.json")
    for m in re.finditer(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M):
        lang, block = m.groups()
        if lang == "python":
            _run([sys.executable, "-c", block], work, block)
            continue
        for argv in commands(block):
            if argv[0] in ("make", "pip", "accelerate"):
                continue
            _run(adapt(argv, tiny_llama_dir), work, shlex.join(argv))
    return work


@pytest.mark.slow
def test_readme_commands_run(readme_run):
    for out in ("runs/genrec", "shop/genrec", "shop/soft", "runs/sasrec", "runs/side", "runs/lamp3"):
        assert (readme_run / out).is_dir(), out
    assert (readme_run / "shop/genrec/model.json").exists()


@pytest.mark.slow
def test_readme_yaml_is_what_make_bookshop_writes(readme_run):
    (shown,) = fenced("yaml")
    written = yaml.safe_load((readme_run / "shop/bookshop.yaml").read_text(encoding="utf-8"))
    assert yaml.safe_load(shown) == written


@pytest.mark.slow
def test_readme_accelerate_command(tmp_path, tiny_llama_dir):
    """The multi-GPU line runs as 2-process DDP over gloo on CPU (`--multi_gpu` picks the torchrun launcher)."""
    lines = [argv for block in fenced("bash") for argv in commands(block) if argv[0] == "accelerate"]
    assert len(lines) == 1
    argv = lines[0]
    script = argv.index("scripts/train_genrec.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", *argv[2:script], str(REPO / argv[script])]
    rest = adapt(["llmrec", "train", "genrec", *argv[script + 1:]], tiny_llama_dir)[5:]
    _run([*launch, *rest], tmp_path, shlex.join(argv))
    assert (tmp_path / "runs/genrec-ddp/model.json").exists()


@pytest.mark.slow
def test_model_dir_page_opens_a_saved_model(readme_run):
    """llmrec/lm/MODEL_DIR.md's plain transformers + peft snippet opens the genrec model the README trained."""
    page = (REPO / "llmrec/lm/MODEL_DIR.md").read_text(encoding="utf-8")
    (snippet,) = fenced("python", page)
    assert 'd = "runs/genrec"' in snippet
    snippet = snippet.replace('d = "runs/genrec"', 'd = "shop/genrec"')
    check = '\nassert model(**tok("<a_1><b_1>", return_tensors="pt")).logits.shape[-1] == len(tok)\n'
    _run([sys.executable, "-c", snippet + check], readme_run, "MODEL_DIR.md snippet")
