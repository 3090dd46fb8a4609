"""Load any Hugging Face causal LM (the offline default, a hub id, a local folder) with safe defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from llmrec.errors import LlmrecError
from llmrec.hardware import resolve_dtype
from llmrec.resources import resolve_llm

logger = logging.getLogger(__name__)


TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_dtype(device: str | None = None) -> torch.dtype:
    """What ``auto`` means here: bf16 only where the hardware runs it natively (CUDA with bf16, a CPU with
    AVX512-BF16 or AMX), fp16 on CUDA without bf16, else fp32 (see :func:`llmrec.hardware.resolve_dtype`)."""
    return TORCH_DTYPES[resolve_dtype("auto", device=device)]


def dtype_name(dtype: str | torch.dtype | None, device: str | None = None) -> str:
    """``"bf16"``/``"fp16"``/``"fp32"`` for a name, a long torch name, a ``torch.dtype`` or ``None``/``"auto"``
    (resolved for this machine); anything else is a ConfigError."""
    if isinstance(dtype, torch.dtype):
        for name, value in TORCH_DTYPES.items():
            if value == dtype:
                return name
        return resolve_dtype(str(dtype).removeprefix("torch."))  # ConfigError naming it
    return resolve_dtype(dtype, device=device)


def parse_dtype(dtype: str | torch.dtype | None, device: str | None = None) -> torch.dtype:
    return TORCH_DTYPES[dtype_name(dtype, device)]


def load_causal_lm(
    name_or_path: str | Path | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
    device: str | None = None,
    attention: str | None = None,
):
    """Return ``(model, tokenizer)``. ``None`` or ``"smollm2-135m"`` means the offline default. ``attention``:
    the attention kernel (:func:`llmrec.lm.attention.resolve_attention`; default ``LLMREC_ATTENTION`` or auto)."""
    from llmrec.quiet import quiet_libraries

    quiet_libraries()  # before transformers/peft pull in bitsandbytes
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmrec.distributed import default_device
    from llmrec.lm.attention import resolve_attention

    path = resolve_llm(name_or_path)
    device = device or default_device()  # on GPUs, each launcher process its own (cuda:LOCAL_RANK)
    torch_dtype = parse_dtype(dtype, device)
    kwargs: dict = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    implementation = resolve_attention(attention, str(device))
    if implementation is not None:
        kwargs["attn_implementation"] = implementation
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
        kwargs["device_map"] = {"": device}  # a 4-bit model is placed while loading; `.to()` refuses it
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise LlmrecError(f"cannot load model {name_or_path!r} from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not load_in_4bit and str(device) != "cpu":
        model.to(device)
    model.eval()
    return model, tokenizer
