"""The world-model task end to end on tiny shapes: train → metrics, plots, GIFs → eval →
compare, its config checks, and the world checker's refusal of NaN."""

import json

import pytest
import torch

pytest.importorskip("lightning")

from fernn.cli import main  # noqa: E402
from fernn.experiments import load_config, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def world_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    runs = {}
    for name, model in (("flowm", "world_model"), ("no_sme", "world_model_no_sme")):
        cfg = load_config("world_tiny", [f"model={model}", f"name=world_{name}"])
        runs[name] = (root / name, train(cfg, root / name))
    return runs


def test_a_world_run_writes_metrics_plots_and_both_gifs(world_runs):
    run_dir, metrics = world_runs["flowm"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["task"] == "world" and saved["steps"] == 4 and saved["parameters"] == 108
    assert len(saved["per_step"]["mse"]) == 3 and len(saved["long"]["mse"]) == 6
    assert 0 < saved["test_mse"] < 1 and saved["test_psnr"] > 0 and -1 <= saved["test_ssim"] <= 1
    # PSNR of the pooled MSE, not a mean of per-step PSNRs
    assert saved["test_psnr"] == pytest.approx(10 * torch.log10(torch.tensor(1 / saved["test_mse"])).item())
    for name in ("rollout.gif", "memory.gif", "rollout_error.png", "learning_curves.png",
                 "report.md", "model.safetensors", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    report = (run_dir / "report.md").read_text()
    assert "memory.gif" in report and "PSNR" in report and "MNIST World" in report
    # without self-motion equivariance the map does not follow the world: no memory GIF
    no_sme_dir, _ = world_runs["no_sme"]
    assert not (no_sme_dir / "memory.gif").exists()
    assert "No memory GIF" in (no_sme_dir / "report.md").read_text()


def test_world_eval_and_compare_from_the_cli(world_runs, tmp_path, capsys):
    run_dir, metrics = world_runs["flowm"]
    assert main(["eval", str(run_dir), "--out", str(tmp_path / "m.json")]) == 0
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["test_mse"] == metrics["test_mse"]  # the same clips, the same weights
    out = capsys.readouterr().out
    assert "PSNR" in out and "MSE at predicted step 6" in out
    assert main(["eval", str(run_dir), "long_predicted=4", "--out", str(tmp_path / "m4.json")]) == 0
    assert len(json.loads((tmp_path / "m4.json").read_text())["long"]["mse"]) == 4
    dirs = [str(d) for d, _ in world_runs.values()]
    assert main(["compare", *dirs, "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "world_flowm" in text and "world_no_sme" in text and "SSIM" in text
    assert (tmp_path / "cmp" / "compare_rollout_error.png").is_file()


def test_world_configs_check_the_model_against_the_data():
    with pytest.raises(ValueError, match=r"the model's world_size \(50\) is not the data's \(28"):
        load_config("world_tiny", ["model_options.world_size=none"])
    with pytest.raises(ValueError, match="task 'world' needs a world model"):
        load_config("world_tiny", ["model=fernn_predictor", "model_options.world_size=none",
                                   "model_options.view_size=none"])
    with pytest.raises(ValueError, match="preset must be one of"):
        load_config("world_tiny", ['preset="dynamic"'])
    with pytest.raises(ValueError, match=r"view_size \(40\) must not exceed world_size \(28\)"):
        load_config("world_tiny", ["view_size=40"])
    paper = load_config("world_flowm")
    assert paper.task_options.geometry()["world_size"] == 50
    from fernn.models import get_model

    assert sum(p.numel() for p in get_model(paper.model, **paper.model_options).parameters()) == 74_880


def test_the_world_checker_fails_on_nan():
    from fernn.models import get_model
    from fernn.testing import assert_world_model_equivariant, world_model_equivariance_error

    model = get_model("world_model", hidden_channels=2, max_speed=1, world_size=8, view_size=8)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    views = torch.rand(1, 3, 1, 8, 8)
    actions = torch.zeros(1, 5, 2, dtype=torch.long)
    report = world_model_equivariance_error(model, "tracking", views, actions, pred_len=2,
                                            velocity=(1, 0))
    assert report.nonfinite > 0 and not report.passed(1e-5)
    with pytest.raises(AssertionError, match="NaN"):
        assert_world_model_equivariant(model, views, actions, pred_len=2)
