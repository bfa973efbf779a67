"""Training-step time of FlowRNN and of the full next-step model, against a research-style
baseline, as a fraction of the machine's measured fp32 matmul rate.

Baseline (written here the way research code writes it): every step, a Python loop over
velocities of ``torch.roll``, then ``torch.stack``; the input convolution per frame;
``nn.Conv2d(padding_mode="circular")``. Same maths, same weights: its outputs are checked
against fernn's before timing.

    python benchmarks/step.py                       # CPU size: B=8, hidden 32, V=25, 28×28, 10 frames
    python benchmarks/step.py --size paper          # B=128, hidden 128, V=25, 10+10 frames
    python benchmarks/step.py --json out.json --checkpoint-every 5

FLOPs: a 3×3 convolution costs 2·9·C_in·C_out·H·W per image; the training step is
counted as 3× the forward's convolution FLOPs (forward, input gradient, weight gradient).
"""

from __future__ import annotations

import argparse
import json
import platform

import torch
from _timing import timed

import fernn
from fernn.models import get_model

SIZES = {
    "cpu": dict(batch=8, hidden=32, max_speed=2, size=28, frames=10, observed=10, predicted=10),
    "paper": dict(batch=128, hidden=128, max_speed=2, size=28, frames=10, observed=10,
                  predicted=10),
}


# -- the baseline, research style ----------------------------------------------------------
def baseline_rnn(x, flow, conv_u, conv_w, state=None):
    """Vanilla FERNN with a Python loop of torch.roll over V; returns (out, h)."""
    B, T, _, H, W = x.shape
    V = len(flow)
    h = state if state is not None else x.new_zeros(B, V, conv_w.out_channels, H, W)
    outs = []
    for t in range(T):
        u = conv_u(x[:, t]).unsqueeze(1)  # (B, 1, C, H, W), per frame
        shifted = torch.stack(
            [torch.roll(h[:, i], shifts=(vy, vx), dims=(-2, -1)) for i, (vy, vx) in enumerate(flow)],
            dim=1,
        )
        h = torch.relu(u + conv_w(shifted.flatten(0, 1)).view_as(shifted))
        outs.append(h)
    return torch.stack(outs, 1), h


def baseline_predictor(x, model, pred_len):
    flow = model.flow
    layer = model.rnn.layers[0]
    conv_u, conv_w = layer.conv_in, layer.conv_hid
    _, h = baseline_rnn(x, flow, conv_u, conv_w)
    preds = []
    for k in range(pred_len):
        if k > 0:
            _, h = baseline_rnn(feed[:, None], flow, conv_u, conv_w, h)
        moved = torch.stack(
            [torch.roll(h[:, i], shifts=v, dims=(-2, -1)) for i, v in enumerate(flow)], 1
        )
        y = model.decoder(moved.amax(1))
        preds.append(y)
        feed = y.detach()
    return torch.stack(preds, 1)


# -- measurement ---------------------------------------------------------------------------
def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = timed(lambda: a @ b, repeats)
    return 2 * n**3 / t / 1e9


def conv_flops(cin, cout, H, W, images) -> float:
    return 2.0 * 9 * cin * cout * H * W * images


def rnn_step_flops(cfg) -> float:
    B, C, V, S, T = cfg["batch"], cfg["hidden"], (2 * cfg["max_speed"] + 1) ** 2, cfg["size"], cfg["frames"]
    forward = T * (conv_flops(1, C, S, S, B) + conv_flops(C, C, S, S, B * V))
    return 3 * forward


def model_step_flops(cfg, decoder_layers=4) -> float:
    B, C, V, S = cfg["batch"], cfg["hidden"], (2 * cfg["max_speed"] + 1) ** 2, cfg["size"]
    steps = cfg["observed"] + cfg["predicted"] - 1  # recurrent steps
    recurrent = steps * (conv_flops(1, C, S, S, B) + conv_flops(C, C, S, S, B * V))
    decoder = cfg["predicted"] * (decoder_layers * conv_flops(C, C, S, S, B)
                                  + conv_flops(C, 1, S, S, B))
    return 3 * (recurrent + decoder)


def train_step(forward, params):
    def step():
        for p in params:
            p.grad = None
        forward().square().mean().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = SIZES[args.size]
    device = torch.device(args.device)
    flow = fernn.TranslationFlow2D(max_speed=cfg["max_speed"])
    B, C, S = cfg["batch"], cfg["hidden"], cfg["size"]

    rnn = fernn.FlowRNN(1, C, flow).to(device)
    x = torch.rand(B, cfg["frames"], 1, S, S, device=device)
    layer = rnn.layers[0]
    ours, _ = rnn(x)
    theirs, _ = baseline_rnn(x, flow, layer.conv_in, layer.conv_hid)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    model = get_model("fernn_predictor", hidden_channels=C, max_speed=cfg["max_speed"]).to(device)
    seq = torch.rand(B, cfg["observed"], 1, S, S, device=device)
    torch.testing.assert_close(model(seq, cfg["predicted"]),
                               baseline_predictor(seq, model, cfg["predicted"]),
                               rtol=1e-4, atol=1e-5)

    peak = matmul_gflops()
    rows = []
    for name, fwd_ours, fwd_base, flops, params in (
        ("FlowRNN", lambda: rnn(x)[0], lambda: baseline_rnn(x, flow, layer.conv_in, layer.conv_hid)[0],
         rnn_step_flops(cfg), list(rnn.parameters())),
        ("next-step model", lambda: model(seq, cfg["predicted"]),
         lambda: baseline_predictor(seq, model, cfg["predicted"]), model_step_flops(cfg),
         list(model.parameters())),
    ):
        t_base = timed(train_step(fwd_base, params), args.repeats)
        t_ours = timed(train_step(fwd_ours, params), args.repeats)
        rows.append(dict(what=name, baseline_s=t_base, fernn_s=t_ours, speedup=t_base / t_ours,
                         gflops=flops / t_ours / 1e9, peak_fraction=flops / t_ours / 1e9 / peak))
    print(f"Training step (forward + backward), size '{args.size}': {cfg}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} {args.device}; fp32 matmul peak measured: {peak:.1f} GFLOP/s")
    print(f"{'':18s} {'baseline (s)':>12s} {'fernn (s)':>10s} {'speed-up':>9s} "
          f"{'GFLOP/s':>8s} {'of peak':>8s}")
    for r in rows:
        print(f"{r['what']:18s} {r['baseline_s']:12.3f} {r['fernn_s']:10.3f} {r['speedup']:8.2f}× "
              f"{r['gflops']:8.1f} {r['peak_fraction']:8.0%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(size=args.size, config=cfg, matmul_gflops=peak, rows=rows,
                           torch=torch.__version__, threads=torch.get_num_threads()), fh, indent=2)


if __name__ == "__main__":
    main()
