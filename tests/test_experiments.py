"""Experiments end to end on tiny configs: train → eval → compare, checkpoints, resume after
a kill, the NaN stop, the 2-process DDP equivalence, and bad configs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("lightning")

from fernn.cli import main as cli_main  # noqa: E402
from fernn.experiments import (  # noqa: E402
    NonFiniteLossError,
    apply_overrides,
    config_to_toml,
    load_config,
    load_model,
    shipped_configs,
    train,
    write_compare_report,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

TINY = ["progress=false"]


def _run_cli(*args, timeout=300):
    """Run ``python -m fernn ARGS`` in a fresh process (as a user would)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "fernn", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _weights(run_dir):
    model, _ = load_model(run_dir)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    metrics = train(load_config("tiny", TINY), out)
    return out, metrics


# -- configs -----------------------------------------------------------------------------
def test_every_shipped_config_is_valid():
    configs = shipped_configs()
    for name in ("flowing_mnist_grnn", "flowing_mnist_fernn_v1", "flowing_mnist_fernn_v2",
                 "velgen_grnn", "velgen_fernn_v1", "velgen_fernn_v2", "cpu_grnn", "cpu_fernn_v1",
                 "tiny"):
        assert name in configs
    for name in configs:
        load_config(name)
    paper = load_config("flowing_mnist_fernn_v2")
    assert (paper.batch_size, paper.lr, paper.grad_clip, paper.epochs) == (128, 1e-3, 1.0, 50)
    assert paper.model_options == {"hidden_channels": 128, "decoder_layers": 4, "max_speed": 2}
    assert load_config("velgen_fernn_v1").task_options.data_max_speed == 1


def test_overrides_and_toml_round_trip(tmp_path):
    cfg = apply_overrides(load_config("tiny"), [
        "lr=3e-4", "model_options.hidden_channels=6", "grad_clip=none", 'digits="font"',
        "loggers=[\"csv\"]"])
    assert cfg.lr == 3e-4 and cfg.model_options["hidden_channels"] == 6 and cfg.grad_clip is None
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hiden=3"], r"unknown config key 'hiden'.*valid keys: accelerator"),
        (["model_options.hiden=3"], r"unknown model_options \['hiden'\].*hidden_channels"),
        (["model=resnet"], "unknown model 'resnet'"),
        (["digits=emnist"], "digits must be one of"),
        (["lr=0"], "lr must be positive"),
        (["batch_size=0"], "batch_size must be at least 1"),
        (["teacher_forcing=2"], "teacher_forcing"),
        (['compile="fast"'], "compile must be one of"),
        (["lr"], "key=value"),
    ],
)
def test_bad_configs_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", overrides)


def test_compiled_training_step_matches_eager(monkeypatch):
    """compile="default": the training step runs torch.compile of the model (same weights,
    same loss and gradients as eager); checkpoints keep the plain parameter names. (Traced
    with the aot_eager backend to keep the suite fast; inductor itself is compared with
    eager on a FlowRNN in test_cells.)"""
    from fernn.experiments._modules import task_module

    modes = []
    real_compile = torch.compile

    def compile_traced(model, mode=None):
        modes.append(mode)
        return real_compile(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_traced)
    modules = {}
    for mode in ("off", "default"):
        torch.manual_seed(0)
        modules[mode] = task_module(load_config("tiny", TINY + [f'compile="{mode}"']))
    eager, compiled = modules["off"], modules["default"]
    assert modes == ["default"] and eager.train_forward is eager.model
    assert compiled.train_forward is not compiled.model
    assert list(compiled.state_dict()) == list(eager.state_dict())
    frames = torch.rand(2, 6, 1, 12, 12)
    grads = []
    for module in (eager, compiled):
        loss = module.training_step(frames, 0)
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in module.model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-7)
    for a, b in zip(grads[1][1], grads[0][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_key_in_a_file_and_missing_file(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('model = "fernn_predictor"\nlearning_rate = 0.1\n')
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['learning_rate'\]"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        load_config(tmp_path / "nope.toml")
    assert cli_main(["train", str(path)]) == 2
    assert "learning_rate" in capsys.readouterr().err


# -- train → eval → compare ----------------------------------------------------------------
def test_train_writes_a_complete_run(tiny_run):
    out, metrics = tiny_run
    for name in ("config.toml", "metrics.json", "model.safetensors", "model.json", "report.md",
                 "learning_curves.png", "length_generalisation.png",
                 "velocity_generalisation.png", "frames.png", "rollout.gif",
                 "checkpoints/last.ckpt", "logs/csv/metrics.csv"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_mse"] == metrics["test_mse"] > 0
    assert saved["steps"] == 6 and saved["epochs"] == 2 and saved["digits"] == "font"
    assert len(saved["length"]["mean"]) == 6 and len(saved["velocity"]["mse"]) == 3
    report = (out / "report.md").read_text()
    for link in ("learning_curves.png", "rollout.gif", "velocity_generalisation.png"):
        assert f"({link})" in report


def test_eval_reproduces_the_run_metrics(tiny_run, tmp_path, capsys):
    out, metrics = tiny_run
    assert cli_main(["eval", str(out), "--out", str(tmp_path / "m.json")]) == 0
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["test_mse"] == pytest.approx(metrics["test_mse"], rel=1e-6)
    assert cli_main(["eval", str(out), "length_frames=9"]) == 0
    assert "MSE at predicted step 9" in capsys.readouterr().out


def test_compare_report(tiny_run, tmp_path):
    out, _ = tiny_run
    other = tmp_path / "grnn"
    train(load_config("tiny", TINY + ["model=grnn_predictor", "model_options.max_speed=none",
                                      "name=tiny_grnn"]), other)
    report = write_compare_report([out, other], tmp_path / "cmp")
    text = report.read_text()
    assert "| [tiny](" in text and "| [tiny_grnn](" in text
    assert (tmp_path / "cmp" / "compare_length.png").is_file()


# -- checkpoints ---------------------------------------------------------------------------
def test_checkpoint_round_trips_agree(tiny_run):
    out, _ = tiny_run
    x = torch.rand(2, 3, 1, 28, 28)
    from_dir, cfg = load_model(out)
    from_ckpt, cfg2 = load_model(out / "checkpoints" / "last.ckpt")
    assert cfg == cfg2
    torch.testing.assert_close(from_dir(x, 3), from_ckpt(x, 3), rtol=0, atol=0)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["fernn_version"] and ckpt["fernn_config"]["model"] == "fernn_predictor"


def test_checkpoints_never_execute_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.ckpt"
    torch.save({"fernn_config": {}, "state_dict": {}, "x": Payload()}, evil)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_model(evil)
    assert not (tmp_path / "pwned").exists()


def test_mismatched_weights_are_refused(tiny_run, tmp_path):
    out, _ = tiny_run
    meta = json.loads((out / "model.json").read_text())
    meta["config"]["model_options"]["hidden_channels"] = 8
    target = tmp_path / "run"
    target.mkdir()
    (target / "model.json").write_text(json.dumps(meta))
    (target / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(target)
    (target / "model.json").unlink()
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(target)


# -- resume --------------------------------------------------------------------------------
def test_killed_run_resumes_with_nothing_lost(tmp_path):
    # Demo-size G-RNN steps (~0.5 s) so that the kill lands mid-training; small eval sets.
    args = ["train", "cpu_grnn", "epochs=6", "steps_per_epoch=3", 'digits="font"',
            "input_frames=4", "predict_frames=4",
            "progress=false", 'loggers=["csv"]', "val_sequences=16", "test_sequences=16",
            "length_frames=12", "length_sequences=4", "velocity_grid=1", "velocity_sequences=2"]
    straight = tmp_path / "straight"
    done = _run_cli(*args, "--out", str(straight))
    assert done.returncode == 0, done.stderr[-2000:]
    # The epoch-end checkpoint says it saves the full state (Lightning logs otherwise).
    assert "weights_only" not in done.stdout + done.stderr

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "fernn", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    ckpt = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (killed / "metrics.json").exists(), "the kill came too late"
    assert torch.load(ckpt, weights_only=True)["epoch"] < 5, "the kill came after training"
    resumed = _run_cli(*args, "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    a, b = _weights(straight), _weights(killed)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    m = json.loads((killed / "metrics.json").read_text())
    assert m["steps"] == 18 and m["epochs"] == 6


def test_resume_refuses_a_different_config(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="different config.*lr"):
        train(load_config("tiny", TINY + ["lr=0.5"]), out)


# -- non-finite loss -----------------------------------------------------------------------
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "nan"
    train(load_config("tiny", TINY + ["epochs=1"]), out)
    ckpt = out / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    (out / "metrics.json").unlink()
    real = torch.nn.functional.mse_loss
    calls = {"n": 0}

    def poisoned(pred, target):
        calls["n"] += 1
        loss = real(pred, target)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(torch.nn.functional, "mse_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="became nan at step 4.*last good checkpoint"):
        train(load_config("tiny", TINY + ["epochs=3"]), out)
    assert ckpt.read_bytes() == before
    assert not (out / "metrics.json").exists()
    load_model(ckpt)  # still loadable


# -- multi-process DDP ---------------------------------------------------------------------
def test_ddp_two_processes_match_one_process(tmp_path):
    """2 CPU processes (gloo), per-rank batch 2, against 1 process with batch 4: each rank
    draws different sequences, the ranks end identical, and equal to the single process.
    In float64, so that the only difference left — the order of the gradient sums — is
    ~1e-15 rather than float32 noise amplified by Adam on near-zero gradients."""
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    common = ["train", "tiny", "progress=false", "epochs=2", 'precision="64-true"']
    r = _run_cli(*common, "devices=2", 'strategy="ddp"', "batch_size=2", "--out", str(ddp))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run_cli(*common, "batch_size=4", "--out", str(single))
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((ddp / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["global_batch"] == 4
    assert len(m["weight_digests"]) == 2 and m["weight_digests"][0] == m["weight_digests"][1]
    a, b = _weights(ddp), _weights(single)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-9)
