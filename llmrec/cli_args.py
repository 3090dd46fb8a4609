"""Options every command that loads an LLM or trains shares: ``--dtype`` and ``--threads``.

Kept free of heavy imports so that ``--help`` stays instant; torch is imported only by
:func:`apply_hardware_args`, which runs when the command does its work.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from llmrec.hardware import DTYPES

DTYPE_HELP = ("model weights' dtype; auto = bf16 only where the hardware runs it natively (CUDA with bf16, a CPU "
              "with AVX512-BF16 or AMX), else fp32 (fp16 on CUDA without bf16); the choice is logged (default: auto)")


def add_hardware_args(parser: argparse.ArgumentParser, *, threads: int = 0,
                      dtype_help: str = DTYPE_HELP) -> argparse.ArgumentParser:
    """Add ``--dtype auto|fp32|bf16|fp16`` (default auto) and ``--threads N`` (default ``threads``; 0 = torch's
    own default) to ``parser``; returns the parser."""
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help=dtype_help)
    parser.add_argument(
        "--threads", type=threads_arg, default=threads, metavar="N|auto",
        help=f"torch CPU threads (0 = torch's default, one per core; auto = the cores other processes leave "
        f"free now; 1 is fastest on a busy shared CPU) (default: {threads})")
    return parser


def threads_arg(text: str) -> int | str:
    """An argparse ``type`` for ``--threads``: an integer or ``auto`` (the range is checked by ``set_threads``)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {text[:40]!r}") from None


threads_arg.__name__ = "threads"  # argparse names the type in its messages


def apply_hardware_args(args: argparse.Namespace) -> str:
    """Pin ``args.threads`` and resolve ``args.dtype`` for this machine (``auto`` -> bf16/fp16/fp32, logged);
    stores the resolved dtype back on ``args`` and returns it."""
    from llmrec.hardware import resolve_dtype, set_threads

    set_threads(getattr(args, "threads", None))
    args.dtype = resolve_dtype(getattr(args, "dtype", None))
    return args.dtype


def bounded_int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer within ``[lo, hi]`` (either bound may be None); anything else is a usage
    error (exit code 2) saying what is expected."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if hi is None:
                want = f">= {lo}"
            elif lo is None:
                want = f"<= {hi}"
            else:
                want = f"within [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"expected an integer {want}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


positive_int = bounded_int(1)


def nonempty_text(text: str) -> str:
    """An argparse ``type``: text with something other than whitespace in it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected text, got an empty or whitespace-only string")
    return text
