"""World-model training step: fernn's FloWM against a research-style baseline, same
weights, outputs checked equal, timed in the same run.

Baseline (written here the way the released research code writes it): every step a
Python loop of ``torch.roll`` over the velocities, then ``torch.stack``; a per-sample
Python loop of ``torch.roll`` by ``−a_t`` (reading the action with ``.item()``); the view's
U-term written into a fresh zero map; ``nn.Conv2d(padding_mode="circular")``-style
convolutions (``F.pad(mode="circular")`` then the convolution); the released rollout
order. fernn: ``get_model("world_model", rollout="released")`` with the same weights (its
shift by ν − a_t is one gather per step over (sample, velocity), fused with the
convolution's padding, through FlowRNN's fused recurrence).

A training step = forward over context + predicted frames, MSE on the predictions,
backward. Times are the best of ``--repeats`` rounds, the candidates timed in turn.

    python benchmarks/world_step.py                  # calibration size: B=8, hidden 16, V=9,
                                                     # world 40, view 24, 24 + 12 frames
    python benchmarks/world_step.py --size paper     # B=32, hidden 64, V=25, 50/32, 50+20
    python benchmarks/world_step.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
import torch.nn.functional as F

import fernn
from fernn.models import get_model

from _timing import interleaved

SIZES = {
    "cpu": dict(batch=8, hidden=16, max_speed=1, world=40, view=24, context=24, predicted=12),
    "paper": dict(batch=32, hidden=64, max_speed=2, world=50, view=32, context=50,
                  predicted=20),
}


def research_conv(weight):
    p = weight.shape[-1] // 2
    return lambda x: F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight)


def research_forward(model, views, actions, pred_len):
    """The released code's forward, research style, on ``model``'s weights."""
    conv_u = research_conv(model.cell.conv_in.weight)
    conv_h = research_conv(model.cell.conv_hid.weight)
    decoder = [research_conv(m.weight) if isinstance(m, torch.nn.Conv2d) else m
               for m in model.decoder]
    velocities = [tuple(v) for v in model.flow.velocities.tolist()]
    B, T = views.shape[:2]
    N, w, C, V = model.world_size, model.view_size, model.hidden_channels, len(velocities)

    def cell(frame, h, action):
        u = conv_u(frame)
        u_full = torch.zeros(B, C, N, N)
        u_full[:, :, :w, :w] = u
        u_full = u_full.unsqueeze(1).expand(-1, V, -1, -1, -1)
        shifted = torch.stack([torch.roll(h[:, i], shifts=v, dims=(2, 3))
                               for i, v in enumerate(velocities)], dim=1)
        rolled = []
        for b in range(B):  # the per-sample action shift
            dy, dx = -action[b]
            rolled.append(torch.roll(shifted[b], shifts=(int(dy.item()), int(dx.item())),
                                     dims=(2, 3)))
        shifted = torch.stack(rolled, dim=0)
        hc = conv_h(shifted.view(B * V, C, N, N)).view(B, V, C, N, N)
        return torch.relu(u_full + hc)

    h = torch.zeros(B, V, C, N, N)
    for t in range(T):
        h = cell(views[:, t], h, actions[:, t])
    prev, outputs = views[:, -1], []
    for t in range(pred_len):
        h = cell(prev, h, actions[:, T + t])
        x = h[:, :, :, :w, :w].max(dim=1)[0]
        for layer in decoder:
            x = layer(x)
        outputs.append(x)
        prev = x
    return torch.stack(outputs, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fernn.tune_cpu_allocator()
    s = SIZES[args.size]
    torch.manual_seed(0)
    model = get_model("world_model", hidden_channels=s["hidden"], max_speed=s["max_speed"],
                      world_size=s["world"], view_size=s["view"], decoder_layers=1,
                      rollout="released")
    B, T, P, w = s["batch"], s["context"], s["predicted"], s["view"]
    views = torch.rand(B, T, 1, w, w)
    actions = torch.randint(-10, 11, (B, T + P, 2))
    actions[:, 0] = 0
    target = torch.rand(B, P, 1, w, w)
    params = list(model.parameters())

    def step(forward):
        def run():
            loss = F.mse_loss(forward(), target)
            return torch.autograd.grad(loss, params)
        return run

    ours = step(lambda: model(views, actions, P))
    research = step(lambda: research_forward(model, views, actions, P))
    with torch.no_grad():
        out_diff = float((model(views, actions, P)
                          - research_forward(model, views, actions, P)).abs().max())
    g_ours, g_res = ours(), research()
    grad_rel = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(g_ours, g_res))
    assert out_diff <= 1e-5, f"outputs differ by {out_diff}"
    assert grad_rel <= 1e-4, f"gradients differ by {grad_rel} (relative)"
    times = interleaved({"fernn": ours, "research": research}, args.repeats)
    best = {k: min(v) for k, v in times.items()}
    result = dict(size=args.size, **s, velocities=len(model.flow),
                  fernn_s=best["fernn"], research_s=best["research"],
                  speedup=best["research"] / best["fernn"], max_output_difference=out_diff,
                  max_relative_gradient_difference=grad_rel, torch=torch.__version__,
                  machine=platform.processor() or platform.machine())
    print(f"world-model training step ({args.size}: B={B}, hidden {s['hidden']}, "
          f"V={len(model.flow)}, world {s['world']}, view {w}, {T}+{P} frames): fernn "
          f"{best['fernn']:.3f} s, research-style {best['research']:.3f} s, "
          f"{result['speedup']:.2f}x (outputs within {out_diff:.1e}, gradients within "
          f"{grad_rel:.1e} relative)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
