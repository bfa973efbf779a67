"""Rotation equivariance of the C_N layers, the kernel bases side by side: the protocol of
docs/equivariance.md (issue 16).

Smooth windowed 33×33 inputs (``fernn.testing.smooth_windowed_images``: blurred noise,
σ = 2 px, under a cos² window that is zero beyond radius 14), N = 36, 3×3 kernels, random
initialisation, zero padding. The input is rotated by θ with ``fernn.rotate`` (bilinear;
an image, or a lifted feature whose orientations are also rolled by θ·N/360 bins), the
error is ``‖L(g·x) − g·L(x)‖ / ‖g·L(x)‖`` in the central disc of radius 12
(``fernn.testing.rotation_layer_error``), averaged over ``--seeds`` initialisations. Three
layers: a lifting convolution (1 channel → 8 fields), a group convolution (8 → 8 fields,
on random smooth lifted inputs) and a stack (lifting, ReLU, group, ReLU, group).

Also: the hidden state's resampling blur, ``k`` successive 30° turns against one turn by
``k·30°`` (``fernn.rotate``, bilinear and Fourier shears; rel. L2, smooth windowed fields
and MNIST test-split digits if ``FERNN_DATA`` has them), and the time of one rotation of
a hidden-state-sized tensor; parameters per layer, and the forward + backward time of one
layer call at the recurrent cell's size (``--fields`` fields, B × 28 × 28, kernel family built in the call),
both bases timed in turn (``_timing.interleaved``), median over rounds; and a FlowRNN
training step with each basis (8 fields × C_12, ω ∈ {−30, 0, 30}, B = 8, 28×28, 10
frames: the rotation row of benchmarks/step.py).

    python benchmarks/rotation_equivariance.py
    python benchmarks/rotation_equivariance.py --sigma 0.5 --max-frequency 1
"""

from __future__ import annotations

import argparse
import statistics

import torch

import os

from fernn import FlowRNN, GroupConv2d, LiftingConv2d, RotationFlow2D, rotate
from fernn.testing import rotation_layer_error, smooth_windowed_images

from _timing import interleaved


def errors(basis: str, args) -> dict:
    N = args.order
    extra = {} if basis == "pixel" else dict(sigma=args.sigma, max_frequency=args.max_frequency)
    g = torch.Generator().manual_seed(0)
    x = smooth_windowed_images(4, 1, generator=g)
    xl = smooth_windowed_images(2, 8 * N, generator=g)
    sums: dict = {}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        conv = dict(kernel_size=3, order=N, padding_mode="zeros", basis=basis, **extra)
        lift = LiftingConv2d(1, 8, **conv)
        group = GroupConv2d(8, 8, **conv)
        stack = torch.nn.Sequential(lift, torch.nn.ReLU(), group, torch.nn.ReLU(),
                                    GroupConv2d(8, 8, **conv))
        for theta in args.angles:
            for name, layer, inp, lifted in (("lifting", lift, x, False),
                                             ("group", group, xl, True),
                                             ("stack", stack, x, False)):
                err = rotation_layer_error(layer, inp, theta, N, lifted_input=lifted, radius=12)
                sums[name, theta] = sums.get((name, theta), 0.0) + err / args.seeds
    return sums


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--order", type=int, default=36)
    p.add_argument("--angles", type=float, nargs="+", default=[10.0, 30.0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sigma", type=float, default=0.4)
    p.add_argument("--max-frequency", type=int, default=2)
    p.add_argument("--fields", type=int, default=8, help="fields of the timed group conv")
    p.add_argument("--batch", type=int, default=16, help="batch of the timed group conv")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    N = args.order
    print(f"torch {torch.__version__}, 1 thread; N = {N}, 3×3, zero padding, "
          f"steerable σ = {args.sigma}, max_frequency = {args.max_frequency}")
    results = {b: errors(b, args) for b in ("pixel", "steerable")}
    print("\nrel. L2 equivariance error in the central disc (mean over seeds):")
    print(f"{'layer':10s} {'θ':>5s} {'pixel':>8s} {'steerable':>10s}")
    for (name, theta) in results["pixel"]:
        print(f"{name:10s} {theta:5.0f} {results['pixel'][name, theta]:8.4f} "
              f"{results['steerable'][name, theta]:10.4f}")

    print("\nrepeated turns: k × 30° against one k·30° turn (rel. L2):")
    fields = {"smooth": smooth_windowed_images(4, 2, generator=torch.Generator().manual_seed(1))}
    try:
        from fernn.data import load_digits

        bank = load_digits("mnist-test-split", "test", root=os.environ.get("FERNN_DATA"),
                           download=False)
        fields["digits"] = bank.images[:16, None].double() / 255
    except (FileNotFoundError, OSError, ValueError):
        pass
    for name, x in fields.items():
        for k in (3, 10):
            row = []
            for method in ("bilinear", "fourier"):
                y = x
                for _ in range(k):
                    y = rotate(y, 30.0, method)
                once = rotate(x, 30.0 * k, method)
                row.append(float((y - once).norm() / once.norm()))
            print(f"  {name:7s} k={k:2d}: bilinear {row[0]:.4f}, fourier {row[1]:.5f}")
    h = torch.randn(args.batch * 3, 4 * N, 28, 28)
    rot_times = interleaved({m: (lambda m=m: rotate(h, 30.0, m)) for m in ("bilinear", "fourier")},
                            args.repeats)
    rmed = {m: statistics.median(t) for m, t in rot_times.items()}
    print(f"  one 30° turn of {tuple(h.shape)}: bilinear {rmed['bilinear'] * 1e3:.1f} ms, "
          f"fourier {rmed['fourier'] * 1e3:.1f} ms")

    print("\nparameters (weights, no bias):")
    extra = dict(sigma=args.sigma, max_frequency=args.max_frequency)
    for name, make in (("lifting 1→8", lambda **k: LiftingConv2d(1, 8, 3, N, **k)),
                       ("group 8→8", lambda **k: GroupConv2d(8, 8, 3, N, **k))):
        old, new = make(basis="pixel"), make(basis="steerable", **extra)
        print(f"  {name}: pixel {old.weight.numel()}, steerable {new.weight.numel()} "
              f"({new.weight.numel() / old.weight.numel():.2f}×; "
              f"{new.num_coefficients} coefficients per kernel)")

    F_ = args.fields
    h = torch.randn(args.batch, F_ * N, 28, 28)
    layers = {b: GroupConv2d(F_, F_, 3, N, padding_mode="zeros", basis=b,
                             **({} if b == "pixel" else extra)) for b in ("pixel", "steerable")}

    def step(layer):
        def run():
            layer.zero_grad(set_to_none=True)
            layer(h).square().mean().backward()
        return run

    times = interleaved({b: step(layer) for b, layer in layers.items()}, args.repeats)
    med = {b: statistics.median(t) for b, t in times.items()}
    print(f"\nforward + backward of GroupConv2d({F_}, {F_}, order={N}) on "
          f"({args.batch}, {F_ * N}, 28, 28), kernel family included, median of "
          f"{args.repeats}: pixel {med['pixel'] * 1e3:.1f} ms, steerable "
          f"{med['steerable'] * 1e3:.1f} ms ({med['steerable'] / med['pixel']:.2f}×)")
    kernel_times = interleaved({b: (lambda l=layer: l.expanded_weight().sum().backward())
                                for b, layer in layers.items()}, args.repeats)
    kmed = {b: statistics.median(t) for b, t in kernel_times.items()}
    print(f"the kernel family alone (build + backward): pixel {kmed['pixel'] * 1e3:.1f} ms, "
          f"steerable {kmed['steerable'] * 1e3:.1f} ms")

    flow = RotationFlow2D([-30, 0, 30], order=12)
    x = torch.rand(8, 10, 1, 28, 28)
    rnns = {}
    for b in ("pixel", "steerable"):
        torch.manual_seed(0)
        rnn = FlowRNN(1, 8, flow)
        cell = rnn.layers[0]
        opts = {} if b == "pixel" else extra
        cell.conv_in = LiftingConv2d(1, 8, 3, 12, basis=b, **opts)  # what make_conv builds
        cell.conv_hid = GroupConv2d(8, 8, 3, 12, basis=b, **opts)
        rnns[b] = rnn

    def rnn_step(rnn):
        def run():
            rnn.zero_grad(set_to_none=True)
            rnn(x)[0].square().mean().backward()
        return run

    rnn_times = interleaved({b: rnn_step(r) for b, r in rnns.items()}, args.repeats)
    rmed = {b: statistics.median(t) for b, t in rnn_times.items()}
    print(f"FlowRNN step (8 × C_12, V = 3, B = 8, 28×28, 10 frames), forward + backward: "
          f"pixel {rmed['pixel']:.3f} s, steerable {rmed['steerable']:.3f} s "
          f"({rmed['steerable'] / rmed['pixel']:.2f}×)")


if __name__ == "__main__":
    main()
