"""What this machine can do, measured at run time: native bf16, thread count, machine facts for run records.

``resolve_dtype("auto")`` picks bf16 only where the hardware runs it natively (a CUDA GPU with bf16, or a
CPU with AVX512-BF16 / AMX); elsewhere fp32, because emulated bf16 on an AVX2-only CPU is many times slower
than fp32. Everything here is cheap and imports torch only when asked.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any

from llmrec.errors import ConfigError

logger = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16", "fp16")
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_native() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX); Apple silicon counts as native too."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return True
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def normalize_dtype(name: str | None) -> str:
    """``None`` -> ``"auto"``; accepts the long torch names too; anything else is a ConfigError."""
    if name is None:
        return "auto"
    name = _ALIASES.get(str(name), str(name))
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; use one of {list(DTYPES)}")
    return name


def resolve_dtype(name: str | None = "auto", *, device: str | None = None, announce: bool = True) -> str:
    """Turn ``auto`` into ``bf16``/``fp16``/``fp32`` for this machine; explicit choices pass through."""
    name = normalize_dtype(name)
    if name != "auto":
        return name
    import torch

    on_cuda = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
    if on_cuda:
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        why = f"CUDA device {torch.cuda.get_device_name()}"
    elif cpu_bf16_native():
        chosen, why = "bf16", "CPU with native bf16 (" + ", ".join(f for f in BF16_CPU_FLAGS if f in cpu_flags()) + ")"
    else:
        chosen, why = "fp32", "CPU without native bf16 (no avx512_bf16/amx_bf16): emulated bf16 is many times slower"
    if announce:
        logger.info("dtype auto -> %s (%s)", chosen, why)
    return chosen


def configure_openmp(environ: MutableMapping[str, str] | None = None, busy: int | None = None) -> str:
    """On a machine other processes are already using, default ``OMP_WAIT_POLICY=PASSIVE`` unless the user set
    it (or ``GOMP_SPINCOUNT``); returns the policy in force ("" = OpenMP's default, spinning).

    Spinning OpenMP threads beside another CPU-bound job leave a descheduled thread's partners spinning at every
    barrier: the same 2-thread step ran 10.7x slower beside one busy neighbour, 0.95x with PASSIVE; but PASSIVE
    costs a quiet 2-core machine 1.7x (eval/results/busy_machine.json), so it is chosen only when the machine is
    busy at start (``busy``: runnable tasks elsewhere, read now when None). OpenMP reads this once, when torch
    loads, so it must run before ``import torch``; later it only warns.
    """
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        busy = running_elsewhere() if busy is None else busy
        if busy > 0:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
            if environ is None and "torch" in sys.modules:
                logger.warning("OMP_WAIT_POLICY=PASSIVE set after torch was imported: it takes effect in new "
                               "processes only")
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" not in env:
        return env.get("OMP_WAIT_POLICY", "")
    return f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}"


ALLOCATOR_ENV = "LLMREC_MALLOC"
ALLOCATOR_POLICIES = ("keep", "system")
# glibc mallopt parameters (malloc.h) and the sizes "keep" sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_MMAP_THRESHOLD = 64 << 20  # blocks below this come from the heap, where freed memory is reused
KEEP_TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept for the next step instead of returned
_allocator_policy: str | None = None


def configure_allocator(policy: str | None = None) -> str:
    """Keep freed memory for reuse instead of returning it to the OS (``keep``, the default; ``system`` leaves the C
    allocator as it is; ``LLMREC_MALLOC`` chooses when ``policy`` is None); returns the policy in force.

    Why: with glibc's defaults a training step's large temporaries (logits chunks, activations) are served by
    fresh ``mmap`` pages or from heap memory trimmed back to the OS after the previous step, so every step pays a
    page fault per 4 KiB it touches first: a SASRec step made ~3,000-4,400 minor faults and spent more time in the
    catalogue softmax's first touch than in its arithmetic; with the two thresholds raised, ~600 (measured in
    eval/results/allocator.json, with the step times). The cost: freed memory is not handed back to the OS until
    the process ends, so a process that runs several models in turn keeps its largest footprint (a SASRec run's
    peak is unchanged, 652 MB either way; the throughput benchmark, which builds one model after another in one
    process, peaked 200-400 MB higher). glibc only (``mallopt``); elsewhere a no-op reported as ``system``."""
    global _allocator_policy
    choice = policy or os.environ.get(ALLOCATOR_ENV) or "keep"
    if choice not in ALLOCATOR_POLICIES:
        raise ConfigError(f"{ALLOCATOR_ENV} must be one of {', '.join(ALLOCATOR_POLICIES)}, got {choice!r}")
    if _allocator_policy == "keep":
        return "keep"  # once set it stays for the process: glibc's adaptive thresholds cannot be restored
    if choice == "keep" and not (_mallopt(_M_MMAP_THRESHOLD, KEEP_MMAP_THRESHOLD)
                                 and _mallopt(_M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)):
        choice = "system"
    _allocator_policy = choice
    return choice


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``; False where there is no glibc or it refused."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        return bool(ctypes.CDLL(None).mallopt(ctypes.c_int(param), ctypes.c_int(value)))
    except (OSError, AttributeError):
        return False


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def running_elsewhere(samples: int = 5, interval: float = 0.02, read=None) -> int:
    """Runnable tasks of other processes right now: the median of a few reads of /proc/loadavg's running
    count, less this process (0 where there is no /proc). Instant, unlike the 1-minute load average."""
    def default_read() -> str:
        with open("/proc/loadavg", encoding="utf-8") as f:
            return f.read()

    read = read or default_read
    counts = []
    for i in range(samples):
        try:
            counts.append(int(read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, round(statistics.median(counts)) - 1)


def load_at_start() -> dict[str, float]:
    """What else runs as a benchmark starts: other runnable processes and the 1-minute load average; a benchmark
    records ``load_at_end(start)`` with its figures."""
    return {"running_elsewhere_at_start": running_elsewhere(), "loadavg_1min_start": os.getloadavg()[0]}


def load_at_end(start: dict[str, float]) -> dict[str, float]:
    """``start`` (:func:`load_at_start`) with the 1-minute load average now."""
    return {**start, "loadavg_1min_end": os.getloadavg()[0]}


def auto_threads(cores: int | None = None, busy: int | None = None) -> int:
    """Threads for ``--threads auto``: the cores nobody else is using now, at least 1 (one thread per core a
    neighbour leaves free; more threads than free cores only queue behind the neighbour)."""
    cores = usable_cores() if cores is None else cores
    busy = running_elsewhere() if busy is None else busy
    return max(1, min(cores, cores - busy))


def set_threads(threads: int | str | None) -> int:
    """Pin torch's intra-op threads (``None`` or 0 keeps torch's default, ``"auto"`` = :func:`auto_threads`);
    returns the count in use. Every recipe, command and benchmark comes through here, so the allocator policy
    (:func:`configure_allocator`) is applied here too."""
    import torch

    configure_allocator()
    if threads == "auto":
        threads = auto_threads()
        logger.info("threads auto -> %d (%d cores, %d busy elsewhere)", threads, usable_cores(), usable_cores() - threads)
    elif threads is not None:
        try:
            threads = int(threads)
        except ValueError:
            raise ConfigError(f"threads must be an integer >= 0 or 'auto', got {threads!r}") from None
    if threads is not None and threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, bf16 support, torch threads, GPUs (with their memory) and peak memory, read now."""
    import torch

    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_bf16_native": cpu_bf16_native(),
        "cpu_bf16_flags": [f for f in BF16_CPU_FLAGS if f in cpu_flags()],
        "torch_threads": torch.get_num_threads(),
        "allocator": _allocator_policy or "system",
        "gpus": [],
        "peak_memory_mb": peak_memory_mb(),
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            facts["gpus"].append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
        facts["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return facts
