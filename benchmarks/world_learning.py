"""Learning at equal budget: FloWM against its no-SME and no-VC ablations on a small
MNIST World (the calibration setting of issue 15), on one CPU thread.

Setting: world 40, view 24, 3 digits, |v| ≤ 1, camera steps ≤ 6, 24 context + 12
predicted frames, hidden 16, V = {-1..1}² (no-VC: V = {0}), batch 8, Adam 1e-3, grad-norm
clip 1, MSE on the predicted frames, 300 steps; digits from the carved MNIST test split
(train part for training, test part for testing). Reports the test MSE over the 12
predicted frames and per-step curves of a longer rollout (``--long`` frames).

    FERNN_DATA=/work/shared/data python benchmarks/world_learning.py --json out.json
    python benchmarks/world_learning.py --steps 50 --long 40      # a quick look
    python benchmarks/world_learning.py --save outdir   # + weights, error curves, GIFs

``--save DIR`` writes each model's weights (``<label>.pt``), the per-step error curves of
the long rollout (``long_mse.png``), and for the first model a rollout GIF (true view |
prediction) and a memory GIF (world | decoded map, the view window drawn) of one test clip.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fernn._world_metrics import world_metrics
from fernn.data import MNISTWorld, load_digits
from fernn.models import get_model

MODELS = {"FloWM": ("world_model", dict(max_speed=1)),
          "no SME": ("world_model_no_sme", dict(max_speed=1)),
          "no VC": ("world_model_no_vc", dict())}


def world(bank, predicted, seed, n):
    return MNISTWorld(bank, world_size=40, view_size=24, num_digits=3, context=24,
                      predicted=predicted, max_velocity=1, max_step=6, seed=seed,
                      num_sequences=n)


def split(batch, context=24):
    views = batch["views"]
    return views[:, :context], batch["actions"], views[:, context:]


def evaluate(model, ds, count, chunk=16):
    preds, targets = [], []
    with torch.no_grad():
        for start in range(0, count, chunk):
            views, actions, target = split(ds.batch(range(start, min(start + chunk, count))))
            preds.append(model(views, actions, target.shape[1]))
            targets.append(target)
    return world_metrics(torch.cat(preds), torch.cat(targets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rollout", default="aligned", choices=["aligned", "released"])
    parser.add_argument("--test", type=int, default=128, help="test clips (12 predicted)")
    parser.add_argument("--long", type=int, default=150, help="predicted frames, long test")
    parser.add_argument("--long-clips", type=int, default=32)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--save", default=None, help="directory for weights and pictures")
    args = parser.parse_args()
    save = Path(args.save) if args.save else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    train_bank = load_digits("mnist-test-split", "train")
    test_bank = load_digits("mnist-test-split", "test")
    train = world(train_bank, 12, seed=args.seed, n=args.steps * args.batch)
    test = world(test_bank, 12, seed=10_000 + args.seed, n=args.test)
    long = world(test_bank, args.long, seed=20_000 + args.seed, n=args.long_clips)
    results = {"setting": vars(args), "models": {}}
    for label in args.models.split(","):
        name, extra = MODELS[label]
        torch.manual_seed(args.seed)
        model = get_model(name, hidden_channels=16, world_size=40, view_size=24,
                          decoder_layers=1, rollout=args.rollout, **extra)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        losses, began = [], time.perf_counter()
        for step in range(args.steps):
            idx = range(step * args.batch, (step + 1) * args.batch)
            views, actions, target = split(train.batch(idx))
            loss = F.mse_loss(model(views, actions, target.shape[1]), target)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if step % 50 == 0 or step == args.steps - 1:
                print(f"{label}: step {step} loss {loss.item():.4f} "
                      f"({time.perf_counter() - began:.0f} s)", flush=True)
        train_s = time.perf_counter() - began
        model.eval()
        short = evaluate(model, test, args.test)
        longer = evaluate(model, long, args.long_clips, chunk=8)
        results["models"][label] = {
            "model": name, "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": train_s, "train_loss": losses,
            "test_mse": short["mse_pooled"], "test_psnr": short["psnr_pooled"],
            "test_ssim": short["ssim_mean"], "test_mse_per_step": short["mse"].tolist(),
            "long_mse_per_step": longer["mse"].tolist(),
            "long_ssim_per_step": longer["ssim"].tolist(),
            "long_mse": longer["mse_pooled"],
        }
        if save:
            torch.save(model.state_dict(), save / f"{label.replace(' ', '_')}.pt")
            if len(results["models"]) == 1:
                pictures(model, long, save, args.long)
        print(f"{label}: test MSE {short['mse_pooled']:.4f} (12 steps), "
              f"{args.long}-step MSE {longer['mse_pooled']:.4f}, trained in {train_s:.0f} s",
              flush=True)
    flowm = results["models"].get("FloWM")
    for label, r in results["models"].items():
        if flowm and label != "FloWM":
            ratio = flowm["test_mse"] / r["test_mse"]
            below = sum(a < b for a, b in zip(flowm["long_mse_per_step"], r["long_mse_per_step"]))
            r["flowm_ratio"] = ratio
            r["flowm_long_steps_below"] = below
            print(f"FloWM / {label}: test MSE ratio {ratio:.2f}; FloWM below at {below} of "
                  f"{len(r['long_mse_per_step'])} long-rollout steps")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if save:
        from fernn._world_plots import error_curves

        curves = {k: v["long_mse_per_step"] for k, v in results["models"].items()}
        error_curves(curves, trained=12).savefig(save / "long_mse.png", dpi=120)


def pictures(model, ds, save: Path, predicted: int) -> None:
    """A rollout GIF and a memory GIF of the first clip of ``ds``."""
    from fernn._world_plots import save_memory_gif, save_rollout_gif
    from fernn.models import to_world

    clip = ds.batch([0], extras=True)
    views, actions, _ = split(clip)
    with torch.no_grad():
        mem = model.memory(views, actions, predicted, frame="allocentric")
    save_rollout_gif(save / "rollout.gif", clip["views"][0], mem["predictions"][0], 24)
    save_memory_gif(save / "memory.gif", clip["world"][0],
                    to_world(mem["decoded"][0], model.view_size), clip["centres"][0],
                    model.view_size)


if __name__ == "__main__":
    main()
