"""Exactness of the world model's relations (FLOWM.md §3) on random weights, through
``fernn.testing``'s checker: the worst relative error of each relation for FloWM (both
rollout orders, both implementations) and for each ablation, in float64 and float32.

Sizes: hidden 4, V = {-2..2}², decoder 1 layer; "flow" and "camera" in a fully observed
32×32 world, "tracking" and "egocentric" in the partially observed 50×50 world with a
32×32 view; 2 clips of 6 context frames (camera moves up to ±10), 4 predicted; for "flow"
and "tracking" the worst over ν̂ ∈ {(1, 0), (0, 2), (−1, 1), (2, −2)} (the tests run every
ν̂ of a smaller V).

    python benchmarks/world_exactness.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from fernn.models import get_model
from fernn.testing import world_model_equivariance_error

MODELS = [("FloWM, aligned", "world_model", {}), ("FloWM, released", "world_model",
          {"rollout": "released"}), ("FloWM, allocentric", "world_model",
          {"frame": "allocentric"}), ("no VC", "world_model_no_vc", {}),
          ("no SME", "world_model_no_sme", {}), ("plain", "world_model_plain", {}),
          ("action concat", "world_model_action_concat", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    views = torch.rand(2, 6, 1, 32, 32, generator=g)
    actions = torch.randint(-10, 11, (2, 10, 2), generator=g)
    actions[:, 0] = 0
    rows = {}
    for label, name, extra in MODELS:
        speed = {} if name in ("world_model_no_vc", "world_model_plain",
                               "world_model_action_concat") else {"max_speed": 2}
        row = {}
        for relation, N in (("flow", 32), ("camera", 32), ("tracking", 50), ("egocentric", 50)):
            torch.manual_seed(1)
            model = get_model(name, hidden_channels=4, world_size=N, view_size=32,
                              decoder_layers=1, **speed, **extra)
            if relation == "egocentric" and not model.self_motion:
                row[relation] = None
                continue
            nus = ([(1, 0), (0, 2), (-1, 1), (2, -2)] if relation in ("flow", "tracking")
                   else [None])  # V = {0} models are compared V-pooled
            errors = {}
            for dtype in (torch.float64, torch.float32):
                errors[str(dtype).split(".")[-1]] = max(
                    world_model_equivariance_error(
                        model, relation, views, actions, pred_len=4, velocity=nu, dtype=dtype,
                        generator=torch.Generator().manual_seed(2)).max_error
                    for nu in nus)
            row[relation] = errors
        rows[label] = row
        print(label + ": " + ", ".join(
            f"{r} " + ("n/a" if e is None else f"{e['float64']:.1e} / {e['float32']:.1e}")
            for r, e in row.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
