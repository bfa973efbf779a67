"""The command line and run directories against a careless or hostile user: every mistake
is one line on stderr and exit status 2 (never a traceback), nothing is written for a
refused command, nothing is lost, a run directory has one writer, and resume keeps the
log and the clock."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

from fernn.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

FAST = ["progress=false", 'loggers=["csv"]', "epochs=1"]


def _fails(capsys, argv, message):
    """``fernn ARGV`` exits 2 with one error line containing ``message``, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and f"fernn {argv[0]}: error:" in err, err
    assert message in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    assert main(["train", "tiny", *FAST, "--out", str(out)]) == 0
    return out


def _snapshot(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


# -- bad values: refused before anything is written -----------------------------------------
@pytest.mark.parametrize("override, message", [
    ("epochs=abc", "epochs must be an integer, got 'abc'"),
    ("epochs=1.5", "epochs must be an integer, got 1.5"),
    ("lr=inf", "lr must be a number, got inf"),
    ("progress=1", "progress must be true or false, got 1"),
    ("length_frames=two", "task_options.length_frames must be an integer"),
    ("model_options.hidden_channels=abc", "hidden_channels"),
    ("model_options.hidden_channels=2.5", "hidden_channels"),
    ("model_options.decoder_layers=-1", "decoder_layers"),
    ('devices="x"', "do not fit this machine"),
    ('precision="99"', "do not fit this machine"),
    ('strategy="foo"', "do not fit this machine"),
])
def test_a_bad_value_is_one_line_and_no_run_directory(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    _fails(capsys, ["train", "tiny", override, "--out", str(out)], message)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_gpu_on_a_cpu_machine(tmp_path, capsys, finished):
    _fails(capsys, ["train", "tiny", 'accelerator="gpu"', "--out", str(tmp_path / "r")],
           "no CUDA GPU is visible here; use accelerator='cpu'")
    assert not (tmp_path / "r").exists()
    _fails(capsys, ["eval", str(finished), "--device", "cuda"], "no CUDA GPU is visible")
    _fails(capsys, ["eval", str(finished), "--device", "banana"], "is not a device")


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    _fails(capsys, ["train", "tiny", "--out", str(target)], "is a file; give --out a directory")
    assert target.read_text() == "mine"


def test_a_toml_syntax_error_names_the_file(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('model = "fernn_predictor\n')
    _fails(capsys, ["train", str(path)], f"{path} is not valid TOML")


def test_a_broken_pipe_is_not_an_error():
    """``fernn models | head -1``: the reader goes away; no traceback, exit 0."""
    proc = subprocess.run(f"{sys.executable} -m fernn models | head -1", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


# -- damaged or hostile files ---------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint at all"])
def test_a_damaged_checkpoint_is_named_and_kept(finished, tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml",):
        (run / name).write_bytes((finished / name).read_bytes())
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(content)
    _fails(capsys, ["train", str(run / "config.toml"), *FAST, "--out", str(run)],
           "is not a readable fernn training checkpoint")
    assert ckpt.read_bytes() == content  # nothing lost: the user decides
    _fails(capsys, ["eval", str(ckpt)], "is not a readable fernn training checkpoint")


def test_a_malicious_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"fernn_config": {}, "state_dict": {}, "x": Payload()}, evil)
    _fails(capsys, ["eval", str(evil)], "refused: loading it would run code")
    assert not marker.exists()


def test_damaged_model_files_are_named(finished, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    (run / "model.json").write_bytes((finished / "model.json").read_bytes())
    _fails(capsys, ["eval", str(run)], "is not a readable safetensors file")
    (run / "model.safetensors").write_bytes((finished / "model.safetensors").read_bytes())
    meta = json.loads((finished / "model.json").read_text())
    meta["config"]["surprise"] = 1
    (run / "model.json").write_text(json.dumps(meta))
    _fails(capsys, ["eval", str(run)], "surprise")
    (run / "model.json").write_text("{not json")
    _fails(capsys, ["eval", str(run)], "is not a readable model.json")


# -- eval settings that would be ignored ----------------------------------------------------
@pytest.mark.parametrize("override", ["model_options.hidden_channels=8", "lr=3",
                                      "input_frames=5"])
def test_eval_refuses_overrides_it_would_ignore(finished, override, capsys):
    err = _fails(capsys, ["eval", str(finished), override],
                 "cannot change the evaluation of a trained model")
    assert "length_frames" in err  # it says what eval does take


# -- one writer, nothing lost ---------------------------------------------------------------
def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".fernn.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": 0}))
    err = _fails(capsys, ["train", "tiny", *FAST, "--out", str(out)], "is in use by process")
    assert str(os.getpid()) in err and lock.is_file()  # the owner's lock stays
    assert not (out / "config.toml").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    assert main(["train", "tiny", *FAST, "--out", str(out)]) == 0  # stale: taken over
    assert not lock.exists() and (out / "metrics.json").is_file()


def test_resume_keeps_the_log_the_clock_and_cleans_temporaries(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "tiny", *FAST, "--out", str(out)]) == 0
    first = json.loads((out / "metrics.json").read_text())
    rows_before = (out / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    leftover = out / "checkpoints" / ".last.ckpt.0123456789abcdef.part"
    leftover.write_bytes(b"half a checkpoint")
    assert main(["train", "tiny", *FAST[:2], "epochs=2", "--out", str(out)]) == 0
    second = json.loads((out / "metrics.json").read_text())
    rows = (out / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[: len(rows_before)] == rows_before  # the first segment's rows are kept
    steps = [int(r.split(",")[1]) for r in rows[1:]]
    assert steps[0] == 0 and max(steps) == second["steps"] - 1
    assert second["train_seconds"] > first["train_seconds"]  # both segments
    assert not leftover.exists()
    straight = tmp_path / "straight"
    assert main(["train", "tiny", *FAST[:2], "epochs=2", "--out", str(straight)]) == 0
    as_steps = lambda path: [r.split(",")[:2] for r in path.read_text().splitlines()]  # noqa: E731
    assert as_steps(out / "logs/csv/metrics.csv") == as_steps(straight / "logs/csv/metrics.csv")


def test_fewer_epochs_than_a_finished_run_is_refused_and_nothing_rewritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tiny", *FAST[:2], "epochs=2", "--out", str(out)]) == 0
    capsys.readouterr()
    before = _snapshot(out)
    _fails(capsys, ["train", "tiny", *FAST, "--out", str(out)],
           "already holds a run trained for 2 epochs; epochs=1 cannot undo that")
    assert _snapshot(out) == before


def test_run_files_are_world_readable_like_the_rest(finished):
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished.iterdir() if p.is_file()}
    assert modes["metrics.json"] == modes["report.md"] == modes["config.toml"], modes


def test_an_unwritable_place_is_one_line(monkeypatch, tmp_path, capsys):
    """A read-only --out (as a non-root user meets it): the OS error, named, exit 2."""
    import fernn.experiments as experiments

    def refuse(cfg, out, resume=True):
        raise PermissionError(13, "Permission denied", str(out))

    monkeypatch.setattr(experiments, "train", refuse)
    err = _fails(capsys, ["train", "tiny", "--out", str(tmp_path / "ro" / "x")],
                 "Permission denied:")
    assert str(tmp_path / "ro" / "x") in err


def test_a_bug_shows_its_traceback_and_asks_to_be_reported(monkeypatch, capsys):
    import fernn.experiments as experiments

    def broken(cfg, out, resume=True):
        raise KeyError("a fernn bug")

    monkeypatch.setattr(experiments, "train", broken)
    assert main(["train", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "this is a bug in fernn" in err
