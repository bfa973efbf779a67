import copy
import pickle

import pytest
import torch

import fernn
from fernn import TranslationFlow2D


def test_grid_layout_and_repr():
    flow = TranslationFlow2D(max_speed=2)
    assert len(flow) == 25
    assert flow.velocities.shape == (25, 2) and flow.velocities.dtype == torch.long
    assert flow.velocities[0].tolist() == [-2, -2] and flow.velocities[1].tolist() == [-2, -1]
    assert repr(flow) == "TranslationFlow2D(max_speed=2)"
    assert repr(TranslationFlow2D(max_speed=0)) == "TranslationFlow2D(max_speed=0)"
    assert len(TranslationFlow2D(max_speed=0)) == 1


def test_explicit_set_keeps_order_and_equality():
    flow = TranslationFlow2D(velocities=[(0, 0), (1, -2)])
    assert flow.velocities.tolist() == [[0, 0], [1, -2]]
    assert repr(flow) == "TranslationFlow2D(velocities=[(0, 0), (1, -2)])"
    assert flow == TranslationFlow2D(velocities=torch.tensor([[0, 0], [1, -2]]))
    assert flow != TranslationFlow2D(velocities=[(1, -2), (0, 0)])
    assert TranslationFlow2D(velocities=[(vy, vx) for vy in (-1, 0, 1) for vx in (-1, 0, 1)]) == (
        TranslationFlow2D(max_speed=1)
    )
    assert len({TranslationFlow2D(max_speed=1), TranslationFlow2D(max_speed=1)}) == 1


def test_immutable_and_picklable():
    flow = TranslationFlow2D(max_speed=1)
    with pytest.raises(AttributeError):
        flow.elements = ()
    assert pickle.loads(pickle.dumps(flow)) == flow
    assert copy.deepcopy(flow) == flow


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(velocities=[(0, 0), (0, 0)]), "distinct"),
        (dict(velocities=[(0.5, 0)]), "integer pixels"),
        (dict(velocities=[(1, 2, 3)]), "pair"),
        (dict(velocities=[]), "at least one"),
        (dict(max_speed=-1), "non-negative"),
        (dict(max_speed=1.5), "non-negative integer"),
        (dict(), "exactly one"),
        (dict(max_speed=1, velocities=[(0, 0)]), "exactly one"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TranslationFlow2D(**kwargs)


def test_index_and_partners():
    flow = TranslationFlow2D(max_speed=1)
    assert flow.index((0, 0)) == 4 and (1, 1) in flow and (2, 0) not in flow
    with pytest.raises(ValueError, match="not in"):
        flow.index((2, 0))
    partners = flow.partner_indices((1, 0))
    for i, (vy, vx) in enumerate(flow.elements):
        expected = flow.index((vy - 1, vx)) if (vy - 1, vx) in flow else -1
        assert partners[i] == expected
    assert (partners == -1).sum() == 3


def test_sample_is_from_the_set_and_seeded():
    flow = TranslationFlow2D(velocities=[(0, 1), (2, -1), (-1, -1)])
    a = flow.sample(200, torch.Generator().manual_seed(3))
    b = flow.sample(200, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert {tuple(v) for v in a.tolist()} == set(flow.elements)


def test_trajectory_and_move_frames_equal_rolls():
    flow = TranslationFlow2D(max_speed=2)
    x0 = torch.randn(3, 2, 9, 8)
    v = torch.tensor([[1, -2], [0, 2], [-1, 0]])
    traj = flow.trajectory(x0, v, steps=5, start=1)
    for b in range(3):
        for t in range(5):
            expected = torch.roll(x0[b], ((t + 1) * int(v[b, 0]), (t + 1) * int(v[b, 1])), (-2, -1))
            assert torch.equal(traj[b, t], expected)
    seq = torch.randn(3, 4, 2, 9, 8)
    moved = flow.move_frames(seq, (1, 2))
    for t in range(4):
        assert torch.equal(moved[:, t], torch.roll(seq[:, t], (t, 2 * t), (-2, -1)))


def test_move_hidden_is_per_slice_roll():
    flow = TranslationFlow2D(max_speed=2)
    h = torch.randn(2, 25, 3, 7, 7, requires_grad=True)
    out = flow.move_hidden(h)
    for i, (vy, vx) in enumerate(flow.elements):
        assert torch.equal(out[:, i], torch.roll(h[:, i], (vy, vx), (-2, -1)))
    out.sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))


def test_move_hidden_zeros_loses_content_at_the_border():
    flow = TranslationFlow2D(velocities=[(0, 1)])
    h = torch.ones(1, 1, 1, 4, 4)
    out = flow.move_hidden(h, padding_mode="zeros")
    assert out[0, 0, 0, :, 0].eq(0).all() and out[0, 0, 0, :, 1:].eq(1).all()
    with pytest.raises(ValueError, match="padding_mode"):
        flow.move_hidden(h, padding_mode="reflect")


def test_action_errors_name_shapes():
    flow = TranslationFlow2D(max_speed=1)
    with pytest.raises(ValueError, match=r"\(B, V=9, C, H, W\)"):
        flow.move_hidden(torch.zeros(2, 8, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        flow.move_frames(torch.zeros(2, 3, 4, 4), (0, 1))
    with pytest.raises(ValueError, match="integer pixels"):
        flow.move_frames(torch.zeros(1, 2, 1, 4, 4), torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="one per sequence"):
        flow.move_frames(torch.zeros(2, 2, 1, 4, 4), torch.zeros(3, 2, dtype=torch.long))


def test_flow_is_a_flow():
    assert isinstance(TranslationFlow2D(max_speed=1), fernn.Flow)
