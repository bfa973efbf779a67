"""Training-step time of FlowRNN and of the full next-step model, against a research-style
baseline, as a fraction of the machine's measured fp32 matmul rate.

Baseline (written here the way research code writes it): every step, a Python loop over
velocities of ``torch.roll``, then ``torch.stack``; the input convolution per frame;
``nn.Conv2d(padding_mode="circular")``. Same maths, same weights: its outputs are checked
against fernn's before timing.

    python benchmarks/step.py                       # CPU size: B=8, hidden 32, V=25, 28×28, 10 frames
    python benchmarks/step.py --size paper          # B=128, hidden 128, V=25, 10+10 frames
    python benchmarks/step.py --json out.json --no-rotation
    python benchmarks/step.py --allocator system    # glibc's malloc as it comes

By default the process runs with ``fernn.tune_cpu_allocator()`` (as the ``fernn`` command
line does): freed tensor memory is reused rather than page-faulted in again. Baseline and
fernn run in the same process, so both get the same allocator.

FLOPs are counted by PyTorch's FlopCounterMode on one step (convolutions forward, input
and weight gradients: ≈ 3× the forward's). Each round times a 2048² fp32 matmul and then
every candidate in turn (this machine's speed drifts within minutes); times are the best
of ``--repeats`` rounds, and the fraction of peak is fernn's rate over the same round's
matmul rate (median over rounds). The FlowRNN rows back-propagate a fixed gradient of the output (the
layer's own cost); the model rows an MSE loss on the predictions.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch
import torch.nn.functional as F

import fernn
from fernn.models import get_model

from _timing import interleaved

SIZES = {
    "cpu": dict(batch=8, hidden=32, max_speed=2, size=28, frames=10, observed=10, predicted=10),
    "paper": dict(batch=128, hidden=128, max_speed=2, size=28, frames=10, observed=10,
                  predicted=10),
}


# -- the baseline, research style ----------------------------------------------------------
def research_conv(conv):
    """``conv``'s weights run as research code runs them: ``nn.Conv2d(padding_mode=
    "circular")``, i.e. ``F.pad(mode="circular")`` (whose backward autograd runs as many
    slice copies and fills) then the convolution; a C_N convolution's kernel family built
    at every call."""
    def run(x):
        if isinstance(conv, torch.nn.Conv2d):
            weight, bias, k = conv.weight, conv.bias, conv.kernel_size[0]
        else:  # fernn's C_N lifting / group convolution
            weight, k = conv.expanded_weight(), conv.kernel_size
            bias = None if conv.bias is None else conv.bias.repeat_interleave(conv.order)
        p = k // 2
        return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight, bias)
    return run


def research_decoder(decoder):
    convs = [research_conv(m) if isinstance(m, torch.nn.Conv2d) else m for m in decoder]

    def run(x):
        for layer in convs:
            x = layer(x)
        return x
    return run


def baseline_rnn(x, flow, conv_u, conv_w, state=None):
    """Vanilla FERNN with a Python loop of torch.roll over V; returns (out, h). ``conv_u``,
    ``conv_w``: :func:`research_conv` of the layer's convolutions."""
    B, T, _, H, W = x.shape
    V = len(flow)
    h = state if state is not None else x.new_zeros(B, V, conv_u(x[:, 0]).shape[1], H, W)
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
    conv_u, conv_w = research_conv(layer.conv_in), research_conv(layer.conv_hid)
    decoder = research_decoder(model.decoder)
    _, h = baseline_rnn(x, flow, conv_u, conv_w)
    preds, feed = [], None
    for k in range(pred_len):
        if k > 0:
            _, h = baseline_rnn(feed[:, None], flow, conv_u, conv_w, h)
        moved = torch.stack(
            [torch.roll(h[:, i], shifts=v, dims=(-2, -1)) for i, v in enumerate(flow)], 1
        )
        y = decoder(moved.amax(1))
        preds.append(y)
        feed = y.detach()
    return torch.stack(preds, 1)


# -- measurement ---------------------------------------------------------------------------
MATMUL_N = 2048


def matmul_step(device):
    """One fp32 ``n×n`` matmul: timed in every round beside the candidates, the hardware
    rate each step is compared with (this machine's speed drifts within minutes)."""
    a, b = (torch.randn(MATMUL_N, MATMUL_N, device=device) for _ in range(2))
    return lambda: a @ b


def counted_flops(step) -> float:
    """FLOPs of one call of ``step`` as PyTorch's FlopCounterMode counts them (convolutions
    and matmuls, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def summarise(what: str, times: dict, flops: float) -> dict:
    """Best time of each candidate; fernn's rate against the matmul rate of the same round
    (median over rounds)."""
    best = {name: min(ts) for name, ts in times.items()}
    peaks = [2 * MATMUL_N**3 / t / 1e9 for t in times["matmul"]]
    fractions = [flops / t / 1e9 / peak for t, peak in zip(times["fernn"], peaks)]
    return dict(what=what, baseline_s=best["baseline"], plain_s=best.get("plain"),
                padded_s=best.get("padded"), fernn_s=best["fernn"],
                speedup=best["baseline"] / best["fernn"], flops=flops,
                gflops=flops / best["fernn"] / 1e9, matmul_gflops=statistics.median(peaks),
                peak_fraction=statistics.median(fractions), rounds={k: v for k, v in times.items()})


def train_step(forward, params, grad_out=None):
    """Forward + backward. With ``grad_out`` the output's gradient is given (the layer's own
    cost, no loss over a huge lifted output); else an MSE-style loss."""
    def step():
        for p in params:
            p.grad = None
        out = forward()
        if grad_out is not None:
            out.backward(grad_out)
        else:
            out.square().mean().backward()
    return step


# fernn's fast paths, switched off from the last: "plain" steps frame by frame under
# autograd with the convolution's own padding; "padded" gathers the shifted state already
# padded (FlowRNNCell.fused_padding); "fernn" also runs each sequence as one autograd node
# with a hand-written backward (FlowRNNCell.fused_sequence).
VARIANTS = {"plain": (False, False), "padded": (True, False), "fernn": (True, True)}


def set_variant(module, variant: str) -> None:
    padding, sequence = VARIANTS[variant]
    for cell in module.modules():
        if isinstance(cell, fernn.FlowRNNCell):
            cell.fused_padding = padding and cell.can_fuse_padding
            cell.fused_sequence = sequence and cell.can_fuse_sequence


def as_variant(module, variant: str, step):
    def run():
        set_variant(module, variant)
        try:
            step()
        finally:
            set_variant(module, "fernn")
    return run


# -- rotation: research-style baseline ------------------------------------------------------
def baseline_rotation_rnn(x, flow, conv_u, conv_w):
    """Vanilla rotation FERNN, research style: per step, a Python loop over V that rotates
    each slice (interpolation) and rolls its orientation axis, then stack; the C_N kernel
    family rebuilt by the convolution at every step; the input convolution per frame."""
    B, T, _, H, W = x.shape
    N = flow.order
    h = None
    outs = []
    for t in range(T):
        u = conv_u(x[:, t]).unsqueeze(1)
        if h is None:
            h = u.new_zeros(B, len(flow), u.shape[2], H, W)
        moved = []
        for i, (omega, bins) in enumerate(zip(flow.velocities.tolist(), flow.bins)):
            slice_ = fernn.rotate(h[:, i], torch.full((B,), omega, dtype=torch.float64,
                                                     device=h.device))
            slice_ = slice_.view(B, -1, N, H, W).roll(bins, dims=2).view(B, -1, H, W)
            moved.append(slice_)
        shifted = torch.stack(moved, 1)
        h = torch.relu(u + conv_w(shifted.flatten(0, 1)).view_as(shifted))
        outs.append(h)
    return torch.stack(outs, 1)


def rotation_rows(args, device, sync):
    """FlowRNN with a rotation flow (8 fields × C_12, ω ∈ {-30, 0, 30}) against the loop."""
    torch.manual_seed(0)
    B, fields, S, T = 8, 8, 28, 10
    flow = fernn.RotationFlow2D([-30, 0, 30], order=12)
    rnn = fernn.FlowRNN(1, fields, flow).to(device)
    layer = rnn.layers[0]
    research = research_conv(layer.conv_in), research_conv(layer.conv_hid)
    x = torch.rand(B, T, 1, S, S, device=device)
    torch.testing.assert_close(rnn(x)[0], baseline_rotation_rnn(x, flow, *research),
                               rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(rnn(x)[0])
    params = list(rnn.parameters())
    base = train_step(lambda: baseline_rotation_rnn(x, flow, *research), params, grad)
    ours = train_step(lambda: rnn(x)[0], params, grad)
    times = interleaved({"matmul": matmul_step(device), "baseline": base, "fernn": ours},
                        args.repeats, sync)
    return summarise("FlowRNN, rotation (8×C_12, V=3)", times, counted_flops(ours))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-rotation", action="store_true", help="skip the rotation row")
    parser.add_argument("--allocator", choices=("tuned", "system"), default="tuned",
                        help="tuned: fernn.tune_cpu_allocator() first (default); system: leave "
                             "glibc's malloc alone")
    args = parser.parse_args()
    if args.allocator == "tuned" and not fernn.tune_cpu_allocator():
        print("note: not glibc, the allocator is left as it is")
    torch.manual_seed(0)
    cfg = SIZES[args.size]
    device = torch.device(args.device)
    flow = fernn.TranslationFlow2D(max_speed=cfg["max_speed"])
    B, C, S = cfg["batch"], cfg["hidden"], cfg["size"]

    rnn = fernn.FlowRNN(1, C, flow).to(device)
    x = torch.rand(B, cfg["frames"], 1, S, S, device=device)
    layer = rnn.layers[0]
    research = research_conv(layer.conv_in), research_conv(layer.conv_hid)
    ours, _ = rnn(x)
    theirs, _ = baseline_rnn(x, flow, *research)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(ours)
    del ours, theirs

    model = get_model("fernn_predictor", hidden_channels=C, max_speed=cfg["max_speed"]).to(device)
    seq = torch.rand(B, cfg["observed"], 1, S, S, device=device)
    torch.testing.assert_close(model(seq, cfg["predicted"]),
                               baseline_predictor(seq, model, cfg["predicted"]),
                               rtol=1e-4, atol=1e-5)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for name, module, fwd_ours, fwd_base, grad in (
        ("FlowRNN", rnn, lambda: rnn(x)[0],
         lambda: baseline_rnn(x, flow, *research)[0], grad_out),
        ("next-step model", model, lambda: model(seq, cfg["predicted"]),
         lambda: baseline_predictor(seq, model, cfg["predicted"]), None),
    ):
        params = list(module.parameters())
        ours = train_step(fwd_ours, params, grad)
        steps = {"matmul": matmul_step(device), "baseline": train_step(fwd_base, params, grad)}
        steps.update({v: as_variant(module, v, ours) for v in VARIANTS})
        rows.append(summarise(name, interleaved(steps, args.repeats, sync), counted_flops(ours)))
    if not args.no_rotation:
        rows.append(rotation_rows(args, device, sync))
    print(f"Training step (forward + backward), size '{args.size}': {cfg}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} {args.device}, {args.allocator} allocator; best of {args.repeats} rounds; 'of peak': fernn's "
          f"rate over the {MATMUL_N}² fp32 matmul rate timed in the same round (median)")
    print(f"{'':34s} {'baseline (s)':>12s} {'plain (s)':>9s} {'padded (s)':>10s} "
          f"{'fernn (s)':>10s} {'speed-up':>9s} {'GFLOP/s':>8s} {'matmul':>7s} {'of peak':>8s}")
    for r in rows:
        plain, padded = ("" if r[k] is None else f"{r[k]:.3f}" for k in ("plain_s", "padded_s"))
        print(f"{r['what']:34s} {r['baseline_s']:12.3f} {plain:>9s} {padded:>10s} "
              f"{r['fernn_s']:10.3f} "
              f"{r['speedup']:8.2f}× {r['gflops']:8.1f} {r['matmul_gflops']:7.1f} "
              f"{r['peak_fraction']:8.0%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(size=args.size, config=cfg, rows=rows, allocator=args.allocator,
                           torch=torch.__version__, threads=torch.get_num_threads()), fh, indent=2)


if __name__ == "__main__":
    main()
