"""A busy machine: llmrec makes OpenMP wait passively when others already use the CPU (unless the user chose) and ``--threads auto`` takes
the cores other processes leave free. The timings behind the choice are in eval/results/busy_machine.json."""

from __future__ import annotations

import argparse
import os
import platform

import pytest
import torch

import llmrec.cli as cli
import llmrec.hardware as hardware
from llmrec.cli_args import add_hardware_args
from llmrec.errors import ConfigError


def test_wait_policy_is_passive_only_on_a_busy_machine_and_a_users_choice_wins():
    env: dict[str, str] = {}
    assert hardware.configure_openmp(env, busy=1) == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert hardware.configure_openmp(env, busy=0) == "" and env == {}  # quiet: spinning is 1.7x faster
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert hardware.configure_openmp(env, busy=3) == "ACTIVE" and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {"GOMP_SPINCOUNT": "1000"}  # tuning the spin directly is a choice too
    assert hardware.configure_openmp(env, busy=3) == "GOMP_SPINCOUNT=1000" and env == {"GOMP_SPINCOUNT": "1000"}


def test_cli_sets_the_policy_before_parsing(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.setattr(hardware, "running_elsewhere", lambda: 2)
    with pytest.raises(SystemExit):
        cli.main(["no-such-group"])
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def test_running_elsewhere_reads_the_instant_run_queue_less_this_process():
    reads = iter(["1.9 1.2 0.8 3/200 77\n", "1.9 1.2 0.8 4/200 77\n", "1.9 1.2 0.8 3/200 77\n"])
    assert hardware.running_elsewhere(samples=3, interval=0, read=lambda: next(reads)) == 2
    assert hardware.running_elsewhere(samples=2, interval=0, read=lambda: "0.0 0.0 0.0 1/90 5") == 0

    def no_proc() -> str:
        raise OSError("no /proc")

    assert hardware.running_elsewhere(read=no_proc) == 0


@pytest.mark.parametrize(("cores", "busy", "want"), [(2, 0, 2), (2, 1, 1), (2, 4, 1), (8, 3, 5), (1, 0, 1)])
def test_auto_threads_leaves_busy_cores_alone(cores, busy, want):
    assert hardware.auto_threads(cores, busy) == want


def test_set_threads_auto_uses_the_free_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    monkeypatch.setattr(hardware, "running_elsewhere", lambda: 1)
    try:
        assert hardware.set_threads("auto") == 1
        monkeypatch.setattr(hardware, "running_elsewhere", lambda: 0)
        assert hardware.set_threads("auto") == 2
        with pytest.raises(ConfigError, match="'auto'"):
            hardware.set_threads("many")
    finally:
        torch.set_num_threads(before)


def test_threads_flag_takes_auto_or_a_count():
    p = add_hardware_args(argparse.ArgumentParser())
    assert p.parse_args(["--threads", "auto"]).threads == "auto"
    assert p.parse_args(["--threads", "3"]).threads == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--threads", "lots"])


def test_allocator_keep_raises_the_glibc_thresholds_once_and_system_leaves_them(monkeypatch):
    """LLMREC_MALLOC: keep (default) sets both mallopt thresholds, system none; once kept it stays for the process;
    a refused mallopt (no glibc) reports system; an unknown policy is a config error naming the variable."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(hardware, "_mallopt", lambda param, value: calls.append((param, value)) or True)
    monkeypatch.setattr(hardware, "_allocator_policy", None)
    monkeypatch.setenv("LLMREC_MALLOC", "system")
    assert hardware.configure_allocator() == "system" and calls == []
    monkeypatch.delenv("LLMREC_MALLOC")
    assert hardware.configure_allocator() == "keep"
    assert sorted(calls) == sorted([(hardware._M_MMAP_THRESHOLD, hardware.KEEP_MMAP_THRESHOLD),
                                    (hardware._M_TRIM_THRESHOLD, hardware.KEEP_TRIM_THRESHOLD)])
    assert hardware.configure_allocator("system") == "keep" and len(calls) == 2  # glibc's adaptive state is gone
    monkeypatch.setattr(hardware, "_allocator_policy", None)
    monkeypatch.setattr(hardware, "_mallopt", lambda param, value: False)
    assert hardware.configure_allocator("keep") == "system"
    with pytest.raises(ConfigError, match="LLMREC_MALLOC"):
        hardware.configure_allocator("jemalloc")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_mallopt_reaches_glibc():
    # the values keep sets (set_threads already applied them in this test process): accepted
    assert hardware._mallopt(hardware._M_MMAP_THRESHOLD, hardware.KEEP_MMAP_THRESHOLD)
    assert hardware._mallopt(hardware._M_TRIM_THRESHOLD, hardware.KEEP_TRIM_THRESHOLD)
