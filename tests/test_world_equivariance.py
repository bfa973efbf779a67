"""The world model's exact relations (FLOWM.md §3) through fernn.testing's checker, on
random weights: every relation at 1e-9 (float64) / 1e-5 (float32), and each ablation
fails the relation it gives up."""

import pytest
import torch

from fernn.models import get_model
from fernn.testing import (
    WORLD_RELATIONS,
    assert_world_model_equivariant,
    world_model_equivariance_error,
)


def _inputs(dtype, B=2, T=5, P=4, w=10):
    g = torch.Generator().manual_seed(1)
    views = torch.rand(B, T, 1, w, w, generator=g).to(dtype)
    actions = torch.randint(-4, 5, (B, T + P, 2), generator=g)
    actions[:, 0] = 0
    return views, actions


def _model(name, N, hidden=3, **kw):
    speed = {"max_speed": 1} if name in ("world_model", "world_model_no_sme") else {}
    return get_model(name, hidden_channels=hidden, world_size=N, view_size=10,
                     decoder_layers=1, **speed, **kw)


@pytest.mark.parametrize("rollout", ["aligned", "released"])
@pytest.mark.parametrize("frame", ["egocentric", "allocentric"])
@pytest.mark.parametrize("N", [10, 13])
def test_flowm_satisfies_every_relation(dtype, rtol, rollout, frame, N):
    views, actions = _inputs(dtype)
    model = _model("world_model", N, rollout=rollout, frame=frame)
    reports = assert_world_model_equivariant(model, views, actions, pred_len=4, dtype=dtype)
    relations = {r.relation for r in reports}
    assert relations == (set(WORLD_RELATIONS) if N == 10 else {"tracking", "egocentric"})
    assert all(r.max_error <= rtol and r.scale > 0 for r in reports)
    # the tracking relabelling leaves the slices at the edge of V unmatched
    track = [r for r in reports if r.relation == "tracking" and r.velocity == (1, 1)][0]
    assert len(track.unmatched) == 5 and len(track.per_velocity) == 4


@pytest.mark.parametrize("name, relation, velocity", [
    ("world_model_no_vc", "flow", (1, 0)),         # no velocity channels: no FERNN law
    ("world_model_no_vc", "tracking", (0, 1)),
    ("world_model_no_sme", "camera", None),        # action-blind: no camera relation
    ("world_model_no_sme", "tracking", (1, -1)),
    ("world_model_plain", "flow", (1, 1)),
    ("world_model_plain", "camera", None),
    ("world_model_action_concat", "flow", (0, 1)),
    ("world_model_action_concat", "camera", None),
    ("world_model_action_concat", "tracking", (1, 0)),
])
def test_ablations_fail_what_they_give_up(name, relation, velocity):
    views, actions = _inputs(torch.float64)
    model = _model(name, 10, hidden=8)  # wide enough that no random init leaves it all dead
    report = world_model_equivariance_error(model, relation, views, actions, pred_len=4,
                                            velocity=velocity)
    assert report.scale > 0 and report.max_error > 1e-3, str(report)
    with pytest.raises(AssertionError, match="relation fails"):
        assert_world_model_equivariant(model, views, actions, [relation],
                                       None if velocity is None else [velocity], pred_len=4)


@pytest.mark.parametrize("name, kept", [("world_model_no_vc", ["camera", "egocentric"]),
                                        ("world_model_no_sme", ["flow"])])
def test_ablations_keep_the_rest(name, kept):
    views, actions = _inputs(torch.float64)
    assert_world_model_equivariant(_model(name, 10), views, actions, kept, pred_len=4)


def test_checker_errors():
    views, actions = _inputs(torch.float64)
    model = _model("world_model", 13)
    with pytest.raises(ValueError, match="fully observed"):
        world_model_equivariance_error(model, "camera", views, actions, pred_len=4)
    with pytest.raises(ValueError, match="needs velocity"):
        world_model_equivariance_error(model, "tracking", views, actions, pred_len=4)
    with pytest.raises(ValueError, match="relation must be"):
        world_model_equivariance_error(model, "shift", views, actions, pred_len=4)
    with pytest.raises(ValueError, match="allocentric"):
        world_model_equivariance_error(_model("world_model_no_sme", 13), "egocentric",
                                       views, actions, pred_len=4)
