"""The world model (FloWM, FLOWM.md §2): parameter counts, both rollout orders against a
plain transcription of the maths (the released code's order and the paper's), the
allocentric form, the ablations, and bad input."""

import pytest
import torch
import torch.nn.functional as F

import fernn
from fernn.models import WorldModel, get_model, list_models


def _cconv(x, weight):
    """3×3 circular correlation, no bias, written plainly."""
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight)


def _transcription(model, views, actions, pred_len, order):
    """The 2-D FloWM update as FLOWM.md §2 states it, with Python loops: per-velocity
    torch.roll, then a per-sample torch.roll by −a_t (the released code's structure),
    the view's U-term zero-padded into the top-left window, crop + max over V + decoder.
    ``order``: "released" (stale write of the previous frame) or "aligned"."""
    U = model.cell.conv_in.weight
    W = model.cell.conv_hid.weight
    convs = [m.weight for m in model.decoder if isinstance(m, torch.nn.Conv2d)]
    Wa = getattr(model, "action_hidden", None)
    B, T = views.shape[:2]
    N, w, C = model.world_size, model.view_size, model.hidden_channels
    vel = [tuple(v) for v in model.flow.velocities.tolist()]
    sme = model.self_motion

    def decode(window):
        x = window
        for k, weight in enumerate(convs):
            x = _cconv(x, weight)
            if k < len(convs) - 1:
                x = torch.relu(x)
        return x

    def moved(h, a):
        out = torch.stack([torch.roll(h[:, i], shifts=v, dims=(-2, -1))
                           for i, v in enumerate(vel)], 1)
        if sme:
            out = torch.stack([torch.roll(out[b], shifts=(-int(a[b, 0]), -int(a[b, 1])),
                                          dims=(-2, -1)) for b in range(B)])
        return out

    def cell(frame, h, a):
        x = frame
        if Wa is not None:
            x = torch.cat([frame, a.to(frame.dtype)[:, :, None, None].expand(B, 2, w, w)], 1)
        full = frame.new_zeros(B, C, N, N)
        full[:, :, :w, :w] = _cconv(x, U)
        hm = moved(h, a)
        hc = _cconv(hm.reshape(B * len(vel), C, N, N), W).view(B, len(vel), C, N, N)
        if Wa is not None:
            a_ch = a.to(frame.dtype)[:, :, None, None].expand(B, 2, N, N)
            hc = hc + _cconv(a_ch, Wa)[:, None]
        return torch.relu(full[:, None] + hc)

    def read(h):
        return decode(h[..., :w, :w].max(dim=1).values)

    h = views.new_zeros(B, len(vel), C, N, N)
    for t in range(T):
        h = cell(views[:, t], h, actions[:, t])
    prev, outs = views[:, -1], []
    for k in range(pred_len):
        a = actions[:, T + k]
        if order == "released":
            h = cell(prev, h, a)
            y = read(h)
        else:
            y = read(moved(h, a))
            h = cell(y, h, a)
        outs.append(y)
        prev = y
    return torch.stack(outs, 1)


def _data(B=2, T=5, P=4, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = torch.rand(B, T, 1, w, w, generator=g, dtype=torch.float64)
    actions = torch.randint(-4, 5, (B, T + P, 2), generator=g)
    actions[:, 0] = 0
    return views, actions


def test_registered_and_parameter_counts():
    for name in ("world_model", "world_model_no_vc", "world_model_no_sme",
                 "world_model_plain", "world_model_action_concat"):
        assert name in list_models()
    paper = get_model("world_model", hidden_channels=64, max_speed=2, world_size=50,
                      view_size=32, decoder_layers=1)
    assert sum(p.numel() for p in paper.parameters()) == 74_880
    assert len(paper.flow) == 25
    for name in ("world_model_no_vc", "world_model_no_sme", "world_model_plain"):
        m = get_model(name, hidden_channels=64)
        assert sum(p.numel() for p in m.parameters()) == 74_880
    concat = get_model("world_model_action_concat", hidden_channels=64)
    assert sum(p.numel() for p in concat.parameters()) == 77_184


@pytest.mark.parametrize("name", ["world_model", "world_model_no_vc", "world_model_no_sme",
                                  "world_model_plain", "world_model_action_concat"])
@pytest.mark.parametrize("rollout", ["released", "aligned"])
def test_rollout_matches_transcription(name, rollout):
    model = get_model(name, hidden_channels=4, max_speed=1 if "vc" not in name
                      and "plain" not in name and "concat" not in name else 0,
                      world_size=14, view_size=10, decoder_layers=2, rollout=rollout).double()
    views, actions = _data()
    with torch.no_grad():
        got = model(views, actions, 4)
        want = _transcription(model, views, actions, 4, rollout)
    assert got.shape == (2, 4, 1, 10, 10)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_released_and_aligned_differ():
    views, actions = _data()
    model = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                      view_size=10).double()
    with torch.no_grad():
        a = model(views, actions, 4)
        model.rollout = "released"
        r = model(views, actions, 4)
    assert (a - r).abs().max() > 1e-3


@pytest.mark.parametrize("rollout", ["released", "aligned"])
def test_allocentric_equals_egocentric(rollout):
    views, actions = _data(P=3)
    model = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                      view_size=10, rollout=rollout).double()
    allo = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                     view_size=10, rollout=rollout, frame="allocentric").double()
    allo.load_state_dict(model.state_dict())
    with torch.no_grad():
        ego_mem = model.memory(views, actions, 3)
        allo_mem = allo.memory(views, actions, 3, frame="egocentric")
        torch.testing.assert_close(allo(views, actions, 3), model(views, actions, 3),
                                   rtol=0, atol=1e-12)
    torch.testing.assert_close(allo_mem["states"], ego_mem["states"], rtol=0, atol=1e-12)
    # the allocentric map is the egocentric one moved by o_t = c_t − c_0
    pos = ego_mem["positions"]
    moved = fernn.roll2d(ego_mem["states"], pos[:, :, None, None, :])
    torch.testing.assert_close(model.memory(views, actions, 3, frame="allocentric")["states"],
                               moved, rtol=0, atol=0)


def test_no_sme_ignores_actions_and_sme_does_not():
    views, actions = _data()
    other = actions.clone()
    other[:, 1:] = torch.randint(-4, 5, other[:, 1:].shape)
    blind = get_model("world_model_no_sme", hidden_channels=4, max_speed=1, world_size=14,
                      view_size=10).double()
    sme = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                    view_size=10).double()
    with torch.no_grad():
        assert torch.equal(blind(views, actions, 4), blind(views, other, 4))
        assert (sme(views, actions, 4) - sme(views, other, 4)).abs().max() > 1e-6


def test_training_step_and_checkpointing_agree():
    views, actions = _data()
    views = views.float()
    model = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                      view_size=10)
    ck = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                   view_size=10, checkpoint_every=2)
    ck.load_state_dict(model.state_dict())
    target = torch.rand(2, 4, 1, 10, 10)
    grads = []
    for m in (model, ck):
        loss = F.mse_loss(m(views, actions, 4), target)
        loss.backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(float(g.abs().sum()) > 0 for g in grads[0])


def test_bad_input_is_named():
    model = get_model("world_model", hidden_channels=4, max_speed=1, world_size=14,
                      view_size=10)
    views, actions = _data()
    with pytest.raises(ValueError, match="views must be"):
        model(views[..., :9], actions, 4)
    with pytest.raises(ValueError, match="actions must be"):
        model(views.float(), actions[:, :-1], 4)
    with pytest.raises(ValueError, match="integer"):
        model(views.float(), actions.float() + 0.5, 4)
    with pytest.raises(ValueError, match="view_size"):
        get_model("world_model", world_size=10, view_size=12)
    with pytest.raises(ValueError, match="rollout"):
        get_model("world_model", rollout="stale")
    with pytest.raises(ValueError, match="action_concat"):
        WorldModel(fernn.TranslationFlow2D(max_speed=1), action_concat=True, self_motion=False)
