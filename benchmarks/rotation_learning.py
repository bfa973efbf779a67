"""Rotation FERNN against rotation G-RNN at an equal CPU budget (issue 16): a small
standalone training loop, independent of ``fernn.experiments``.

Rotating MNIST (``FlowingMNIST`` with a ``RotationFlow2D``): 2 digits from the MNIST
test split (``load_digits("mnist-test-split", ...)``; train part for training, test part
for testing), 28×28, 10 observed → 10 predicted frames, data ω ∈ ``--data-omegas``
(default {−30, 0, 30}°/frame). Model: ``fernn_predictor`` (FERNN-V1^R: V = the data ω,
or ``--model-omegas``) or ``grnn_predictor`` (V = {0}), ``--fields`` fields × C_``--order``,
zero padding, the ``--readout`` of issue 16, vanilla cell, the hidden state rotated by
``--interpolation``. Adam (``--lr``), batch ``--batch``, MSE on the 10
predicted frames, gradient norm clipped at 1 (as ``fernn train``), fresh sequences every
step, one thread. At each budget of ``--steps``: test MSE on ``--test-sequences``
sequences (data ω), and the velocity generalisation, test MSE at each ω of
``--test-omegas`` (``--velgen-sequences`` each; every digit at that ω).

    FERNN_DATA=/work/shared/data python benchmarks/rotation_learning.py --model fernn \\
        --readout research --steps 200 400 --json runs/rot_fernn_research.json

``--save``/``--resume``: continue a run from a saved state (so one budget per process:
``--steps 200 --save a.pt``, then ``--steps 400 --resume a.pt``). Same sequences either way.
``--digits-at centre``: ``FlowingMNIST(..., centred=True)``, every digit at the frame
centre, as the research code's Rotating MNIST (by default FlowingMNIST puts each rotating
digit at a random position on the torus, where its rotation about its own centre is not a
rotation of the frame).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from fernn import RotationFlow2D
from fernn.data import FlowingMNIST, load_digits
from fernn.models import get_model


def build(args):
    common = dict(hidden_channels=args.fields, padding_mode="zeros", readout=args.readout,
                  decoder_layers=args.decoder_layers, interpolation=args.interpolation)
    if args.model == "fernn":
        omegas = args.model_omegas or args.data_omegas
        return get_model("fernn_predictor", angular_velocities=omegas,
                         order=args.order, **common)
    return get_model("grnn_predictor", order=args.order, **common)


@torch.no_grad()
def evaluate(model, ds, count, batch=32):
    model.eval()
    total = 0.0
    for start in range(0, count, batch):
        frames = ds.batch(range(start, min(count, start + batch)))["frames"]
        pred = model(frames[:, :10], 10)
        total += F.mse_loss(pred, frames[:, 10:], reduction="sum").item()
    model.train()
    return total / (count * 10 * 28 * 28)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["fernn", "grnn"], required=True)
    p.add_argument("--readout", default="research")
    p.add_argument("--interpolation", default="bilinear",
                   help="the model flow's rotation of the hidden state: bilinear | fourier "
                        "(the data are always made with bilinear rotations)")
    p.add_argument("--fields", type=int, default=4)
    p.add_argument("--order", type=int, default=12)
    p.add_argument("--decoder-layers", type=int, default=4)
    p.add_argument("--data-omegas", type=float, nargs="+", default=[-30.0, 0.0, 30.0])
    p.add_argument("--model-omegas", type=float, nargs="+", default=None,
                   help="the FERNN's V (default: the data ω)")
    p.add_argument("--test-omegas", type=float, nargs="+",
                   default=[-90.0, -60.0, -30.0, 0.0, 30.0, 60.0, 90.0])
    p.add_argument("--steps", type=int, nargs="+", default=[200, 400])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-sequences", type=int, default=128)
    p.add_argument("--velgen-sequences", type=int, default=32)
    p.add_argument("--digits-at", choices=["random", "centre"], default="random",
                   help="random: FlowingMNIST's uniform positions; centre: the research "
                        "code's digits at the frame centre")
    p.add_argument("--json", default=None)
    p.add_argument("--save", default=None)
    p.add_argument("--resume", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    root = os.environ.get("FERNN_DATA")
    train_bank = load_digits("mnist-test-split", "train", root=root, download=False)
    test_bank = load_digits("mnist-test-split", "test", root=root, download=False)
    data_flow = RotationFlow2D(args.data_omegas, order=args.order)
    steps_total = max(args.steps)
    centred = args.digits_at == "centre"

    def Data(*a, **k):
        return FlowingMNIST(*a, centred=centred, **k)

    train = Data(train_bank, data_flow, num_digits=2, seq_len=20, seed=args.seed,
                         num_sequences=steps_total * args.batch)
    test = Data(test_bank, data_flow, num_digits=2, seq_len=20, seed=10**6 + 1,
                        num_sequences=args.test_sequences)
    torch.manual_seed(args.seed)
    model = build(args)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, elapsed, results = 0, 0.0, []
    if args.resume:
        saved = torch.load(args.resume, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        step, elapsed, results = saved["step"], saved["elapsed"], saved["results"]
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} readout={args.readout} interpolation={args.interpolation} "
          f"digits at {args.digits_at}, "
          f"{args.fields} fields × C_{args.order}, "
          f"{params} parameters; from step {step}", flush=True)
    for budget in sorted(args.steps):
        if budget <= step:
            continue
        start = time.perf_counter()
        while step < budget:
            frames = train.batch(range(step * args.batch, (step + 1) * args.batch))["frames"]
            loss = F.mse_loss(model(frames[:, :10], 10), frames[:, 10:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 50 == 0:
                print(f"  step {step}: train loss {loss.item():.4f} "
                      f"({elapsed + time.perf_counter() - start:.0f} s)", flush=True)
        elapsed += time.perf_counter() - start
        test_mse = evaluate(model, test, args.test_sequences)
        velgen = {}
        for w in args.test_omegas:
            ds = Data(test_bank, data_flow, num_digits=2, seq_len=20, seed=10**6 + 2,
                              num_sequences=args.velgen_sequences, velocities=[w])
            velgen[w] = evaluate(model, ds, args.velgen_sequences)
        row = dict(step=step, train_seconds=round(elapsed, 1), test_mse=test_mse,
                   velgen=velgen)
        results.append(row)
        print(f"step {step}: test MSE {test_mse:.4f}; velgen "
              + " ".join(f"{w:g}:{v:.4f}" for w, v in velgen.items())
              + f" ({elapsed:.0f} s training)", flush=True)
    if args.save:
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step,
                        elapsed=elapsed, results=results), args.save)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(args=vars(args), parameters=params, results=results), fh, indent=1)


if __name__ == "__main__":
    main()
