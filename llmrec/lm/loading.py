"""Load any Hugging Face causal LM (the offline default, a hub id, a local folder) with safe defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from llmrec.errors import LlmrecError
from llmrec.resources import resolve_llm

logger = logging.getLogger(__name__)


def default_dtype() -> torch.dtype:
    """bf16 where the hardware runs it well (CUDA with bf16, or a CPU); fp16 on older GPUs."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype()
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise LlmrecError(f"unknown dtype {dtype!r}; use one of {sorted(table)}")
    return table[dtype]


def load_causal_lm(
    name_or_path: str | Path | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: str | None = None,
):
    """Return ``(model, tokenizer)``. ``None`` or ``"smollm2-135m"`` means the offline default."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_llm(name_or_path)
    torch_dtype = parse_dtype(dtype)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise LlmrecError(
                "4-bit (QLoRA) loading needs a CUDA GPU: bitsandbytes on CPU is slower than bf16 and can drop "
                "LoRA gradients; load in bf16 instead (omit --load-in-4bit)"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise LlmrecError(f"cannot load model {name_or_path!r} from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer
