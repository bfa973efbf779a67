"""Per-sample, per-frame transport offsets: S_{ν + d_{b,t}} (the world model's ν − a_t),
against a plain transcription with torch.roll over samples and velocities."""

import pytest
import torch

import fernn
from fernn import _recurrence


def _reference(layer, flow, x, offsets, cell):
    """The update written plainly: a Python loop of torch.roll over sample and velocity."""
    B, T = x.shape[:2]
    H, W = x.shape[-2:]
    C = layer.hidden_channels
    h = x.new_zeros(B, len(flow), C, H, W)
    outs = []
    for t in range(T):
        hs = torch.stack([
            torch.stack([torch.roll(h[b, i], (int(v[0] + offsets[b, t, 0]),
                                              int(v[1] + offsets[b, t, 1])), (-2, -1))
                         for i, v in enumerate(flow.velocities)])
            for b in range(B)])
        u = layer.conv_in(x[:, t])[:, None]
        a = layer.conv_hid(hs.reshape(-1, C, H, W)).view(B, len(flow), -1, H, W)
        if cell == "rnn":
            h = torch.relu(u + a)
        else:
            uz, ur, un = u.chunk(3, 2)
            az, ar, an = a.chunk(3, 2)
            z, r = torch.sigmoid(uz + az), torch.sigmoid(ur + ar)
            h = (1 - z) * torch.tanh(un + r * an) + z * hs
        outs.append(h)
    return torch.stack(outs, 1)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("checkpoint_every", [0, 2])
def test_offsets_match_plain_rolls(cell, checkpoint_every, monkeypatch):
    monkeypatch.setattr(_recurrence, "CPU_CHUNK_BYTES", 4 * 9 * 9 * 9 * 8 * 2)  # 2-item chunks
    flow = fernn.TranslationFlow2D(max_speed=1)
    rnn = fernn.FlowRNN(1, 4, flow, cell=cell, checkpoint_every=checkpoint_every).double()
    x = torch.rand(3, 5, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    offsets = torch.randint(-4, 5, (3, 5, 2))
    out, _ = rnn(x, offsets=offsets)
    ref = _reference(rnn.layers[0], flow, x, offsets, cell)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.rand_like(out)
    params = [x, rnn.layers[0].conv_hid.weight, rnn.layers[0].conv_in.weight]
    got = torch.autograd.grad((out * g).sum(), params)
    want = torch.autograd.grad((ref * g).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_offsets_fused_equals_plain_path():
    flow = fernn.TranslationFlow2D(max_speed=1)
    rnn = fernn.FlowRNN(1, 3, flow)
    x = torch.rand(2, 4, 1, 8, 8)
    offsets = torch.randint(-3, 4, (2, 4, 2))
    fused, _ = rnn(x, offsets=offsets)
    rnn.layers[0].fused_sequence = False
    plain, _ = rnn(x, offsets=offsets)
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)


def test_offsets_are_checked():
    flow = fernn.TranslationFlow2D(max_speed=1)
    rnn = fernn.FlowRNN(1, 3, flow)
    with pytest.raises(ValueError, match="offsets must be integer"):
        rnn(torch.rand(2, 4, 1, 8, 8), offsets=torch.zeros(2, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="offsets must be integer"):
        rnn(torch.rand(2, 4, 1, 8, 8), offsets=torch.zeros(2, 4, 2))
    rot = fernn.RotationFlow2D([0, 90], order=4)
    with pytest.raises(ValueError, match="offset"):
        rot.move_hidden(torch.zeros(1, 2, 4, 5, 5), offset=torch.zeros(1, 2, dtype=torch.long))
