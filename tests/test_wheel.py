"""The wheel works outside the checkout: build it, install it into a fresh virtual environment in tmp_path and
run the smoke chain there, with the checkout out of sight (cwd, sys.path and PYTHONPATH).

The new environment borrows the test environment's installed packages through a ``.pth`` line (``--no-deps``
install, no network), which adds their folder to sys.path without running its ``.pth`` files, so an editable
llmrec of the test environment cannot shadow the installed wheel; the test checks that it does not.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setuptools reads to build the wheel (pyproject.toml, setup.py and the folders they map into the package).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "llmrec", "prompts", "adapters", "eval/tasks")
SHIPPED = {"prompts": "*.jinja", "adapters": "*.yaml", "eval/tasks": "*.yaml"}  # checkout folder -> shipped files
DATA_DIR = {"prompts": "llmrec/_data/prompts", "adapters": "llmrec/_data/adapters", "eval/tasks": "llmrec/_data/tasks"}


def smoke_chain(small_data: Path, tiny_llm: Path) -> list[list[str]]:
    """``llmrec`` commands run in order in the fresh environment, from a folder outside the checkout."""
    return [
        ["eval", "ls", "--json"],
        ["eval", "validate"],  # every built-in task's prompt template resolves inside the wheel
        ["items", "build", "--data", str(small_data), "--out", "sids", "--levels", "1", "--codebook-size", "2",
         "--cache", "cache", "--json"],
        ["eval", "run", "--tasks", "ml100k_rating", "--model", "baseline:user-mean", "--limit", "20",
         "--n-boot", "0", "--no-report", "--out", "eval-baseline"],
        ["eval", "run", "--tasks", "ml100k_rating", "--model", str(tiny_llm), "--dtype", "fp32", "--limit", "4",
         "--n-boot", "0", "--no-progress", "--out", "eval-llm"],
        # a recipe from a config shipped in the wheel, on the small dataset: writes the model, config.yaml, run.json
        ["train", "sasrec", "--config", "tiny/sasrec", "--data", str(small_data), "--out", "sasrec"],
    ]


def _copy_sources(dest: Path) -> Path:
    """The files the build reads, plus a fake trained adapter that must stay out of the wheel."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "trained")
    for rel in SOURCES:
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)
    trained = dest / "adapters" / "trained" / "genrec-run"
    trained.mkdir(parents=True)
    (trained / "adapter_config.yaml").write_text("r: 8\n")
    (dest / "adapters" / "trained" / "stray.yaml").write_text("r: 8\n")
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = _copy_sources(tmp_path_factory.mktemp("wheel-src"))
    out = tmp_path_factory.mktemp("wheel-dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
           "-w", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("llmrec-*.whl")
    return path


def test_wheel_ships_package_data_and_license_not_outputs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for folder, pattern in SHIPPED.items():
        expected = sorted(p.name for p in (ROOT / folder).glob(pattern))
        assert expected, folder
        shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(DATA_DIR[folder] + "/"))
        assert set(expected) <= set(shipped), (folder, sorted(set(expected) - set(shipped)))
    assert not [n for n in names if "trained" in n]
    assert all(n.startswith(("llmrec/", "llmrec-")) for n in names), [n for n in names if not n.startswith("llmrec")]
    dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata


def _fresh_venv(path: Path) -> Path:
    """A venv without pip whose sys.path ends with the test environment's site-packages (pip, torch, ...)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    borrowed = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    Path(own, "zz_test_env.pth").write_text("\n".join(p for p in borrowed if Path(p).is_dir()) + "\n")
    return python


@pytest.mark.slow
def test_installed_wheel_runs_the_smoke_chain_outside_the_checkout(
    wheel: Path, tmp_path: Path, ml_folder, tiny_llama_dir: Path
) -> None:
    t0 = time.perf_counter()
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "LLMREC_PROMPTS")}
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    work = tmp_path / "work"  # cwd: nothing of the checkout on sys.path or beside the commands
    work.mkdir()

    timings: list[tuple[str, float]] = []

    def run(cmd: list[str]) -> str:
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, timeout=300)
        timings.append((" ".join(Path(c).name if "/" in c else c for c in cmd[:4])[:40], time.perf_counter() - t))
        assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
        return proc.stdout

    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    where = json.loads(run([str(python), "-c", (
        "import json, llmrec, llmrec.package_data as p; print(json.dumps({'llmrec': llmrec.__file__, "
        "'prompts': str(p.prompts_dir()), 'adapters': str(p.adapters_dir()), 'tasks': str(p.tasks_dir())}))")]))
    venv = (tmp_path / "venv").resolve()
    for key, path in where.items():
        assert Path(path).resolve().is_relative_to(venv), (key, path)
    assert (Path(where["adapters"]) / "lora.yaml").is_file() and not (Path(where["adapters"]) / "trained").exists()

    llmrec = str(tmp_path / "venv" / "bin" / "llmrec")
    small = ml_folder()
    outputs = [run([llmrec, *cmd]) for cmd in smoke_chain(small, tiny_llama_dir)]

    tasks = {row["name"]: row for row in json.loads(outputs[0])}
    assert {"ml100k_rating", "uqa", "lamp_3"} <= set(tasks)
    assert Path(tasks["ml100k_rating"]["source"]).resolve().is_relative_to(venv)
    assert "all task files are valid" in outputs[1]
    assert json.loads(outputs[2])["items"] == 5 and (work / "sids").is_dir()
    for out, model in (("eval-baseline", "baseline:user-mean"), ("eval-llm", None)):
        results = json.loads((work / out / "results.json").read_text())
        rows = results["tasks"]["ml100k_rating"]["variants"]
        assert rows and all("mae" in row["metrics"] for row in rows.values()), out
        if model:
            assert model in rows
    # the recipe ran from the wheel's shipped config and recorded what it resolved
    run = json.loads((work / "sasrec" / "run.json").read_text())
    assert run["config"]["users"] == 40 and run["config"]["data"] != "ml-100k" and run["machine"]["cpu_cores"]
    assert (work / "sasrec" / "config.yaml").is_file()
    print(f"wheel smoke chain: {time.perf_counter() - t0:.1f} s;", "; ".join(f"{c}: {s:.1f} s" for c, s in timings))
