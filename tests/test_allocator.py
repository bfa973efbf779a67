"""fernn.tune_cpu_allocator: freed tensor memory is reused instead of page-faulted in again."""

import os
import subprocess
import sys

import pytest

import fernn
from fernn import _allocator, cli

# Run in a fresh process: the setting is process-wide, and the probe needs a clean malloc.
PROBE = """
import resource, torch, fernn

def faults(cycles=3, mb=48):  # 48 MB: above glibc's largest dynamic mmap threshold (32 MiB)
    total = 0
    for _ in range(cycles):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(mb * 2**20 // 4)
        x.fill_(1.0)
        del x
        total += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    return total

faults()
before = faults()
applied = fernn.tune_cpu_allocator()
faults(cycles=6)  # the heap grows to fit (a few cycles, depending on the address space)
print(applied, before, faults())
"""


@pytest.mark.skipif(_allocator._glibc() is None, reason="glibc only")
def test_freed_tensor_memory_is_reused_without_page_faults():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    applied, before, after = out[0] == "True", int(out[1]), int(out[2])
    assert applied
    # Untuned, every 48 MB tensor is mapped afresh: its pages fault in again (4 KiB pages:
    # ~36 000 faults; 2 MiB transparent huge pages: ~72).
    assert before >= 60
    assert after <= before // 20


@pytest.mark.parametrize("bad", [0, -1, 2**31, 1.5, True, "1G"])
def test_threshold_is_checked(bad):
    with pytest.raises(ValueError, match="threshold must be an int of bytes"):
        fernn.tune_cpu_allocator(bad)


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(_allocator, "_glibc", lambda: None)
    assert fernn.tune_cpu_allocator() is False


@pytest.mark.parametrize("argv, tuned", [
    (["train", "tiny"], 1),
    (["--system-allocator", "train", "tiny"], 0),
    (["train", "tiny", "model_options.checkpoint_every=2"], 0),  # memory mode
])
def test_cli_tunes_the_allocator_for_runs_not_in_memory_mode(monkeypatch, tmp_path, argv,
                                                             tuned):
    import fernn.experiments

    calls, runs = [], []
    monkeypatch.setattr(_allocator, "tune_cpu_allocator", lambda: calls.append(1) or True)
    monkeypatch.setattr(fernn.experiments, "train",
                        lambda cfg, out, resume: runs.append(cfg.model_options) or {})
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    assert len(runs) == 1 and len(calls) == tuned


def test_commands_without_models_leave_the_allocator_alone(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(_allocator, "tune_cpu_allocator", lambda: calls.append(1) or True)
    assert cli.main(["models"]) == 0
    assert calls == [] and "fernn_predictor:" in capsys.readouterr().out
