"""World-model metrics (torchmetrics SSIM, pooled PSNR) and pictures."""

import math

import numpy as np
import pytest
import torch

from fernn._world_metrics import psnr_from_mse, world_metrics
from fernn._world_plots import (
    error_curves,
    memory_frames,
    rollout_frames,
    save_memory_gif,
    save_rollout_gif,
)
from fernn.data import MNISTWorld, render_font_digits
from fernn.models import get_model, to_world


def test_world_metrics_pool_and_clamp():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 4, 1, 16, 16, generator=g)
    pred = target + 0.1 * torch.randn(3, 4, 1, 16, 16, generator=g)
    m = world_metrics(pred, target)
    p, t = pred.clamp(0, 1).double(), target.double()
    want = ((p - t) ** 2).mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(m["mse"], want)
    torch.testing.assert_close(m["psnr"], 10 * torch.log10(1 / want))
    assert m["psnr_pooled"] == pytest.approx(10 * math.log10(1 / float(((p - t) ** 2).mean())))
    assert m["ssim"].shape == (4,) and 0 < m["ssim_mean"] < 1
    same = world_metrics(target, target)
    torch.testing.assert_close(same["ssim"], torch.ones(4, dtype=torch.float64))
    assert psnr_from_mse(0.0) == math.inf
    with pytest.raises(ValueError, match="pred and target"):
        world_metrics(pred[:, :2], target)


def test_pictures(tmp_path):
    images, labels = render_font_digits(20, seed=1)
    ds = MNISTWorld(images, world_size=30, view_size=16, num_digits=2, context=8,
                    predicted=4, max_step=8, num_sequences=4)
    clip = ds.batch([0], extras=True)
    model = get_model("world_model", hidden_channels=3, max_speed=1, world_size=30,
                      view_size=16)
    views, actions = clip["views"], clip["actions"]
    with torch.no_grad():
        mem = model.memory(views[:, :8], actions, 4, frame="allocentric")
    decoded = to_world(mem["decoded"][0], 16)
    frames = memory_frames(clip["world"][0], decoded, clip["centres"][0], 16)
    assert frames.shape == (12, 30, 62, 3)
    # the window outline: red on the top edge of the view in the first frame (c_0 = 0)
    assert np.allclose(frames[0, (0 - 8) % 30, 0], [1.0, 0.15, 0.15])
    roll = rollout_frames(views[0], mem["predictions"][0], 8)
    assert roll.shape == (12, 16, 34, 3)
    assert np.allclose(roll[:8, :, :16], roll[:8, :, 18:])  # context: model side = views
    save_rollout_gif(tmp_path / "rollout.gif", views[0], mem["predictions"][0], 8)
    save_memory_gif(tmp_path / "memory.gif", clip["world"][0], decoded, clip["centres"][0], 16)
    from PIL import Image

    assert Image.open(tmp_path / "memory.gif").n_frames == 12
    fig = error_curves({"FloWM": [0.01, 0.02], "no SME": np.array([0.1, 0.12])}, trained=1)
    fig.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    with pytest.raises(ValueError, match="context"):
        rollout_frames(views[0], mem["predictions"][0], 7)


def test_to_world_aligns_the_allocentric_map():
    # A model whose map holds exactly the view (identity write, no decoder maths needed):
    # check the alignment rule on the allocentric positions directly.
    a = torch.zeros(1, 30, 30)
    a[0, 8, 8] = 1.0  # allocentric pixel (w//2, w//2) is world pixel c_0 = (0, 0)
    assert to_world(a, 16)[0, 0, 0] == 1.0
    assert to_world(a, 16, start=(3, 4))[0, 3, 4] == 1.0
