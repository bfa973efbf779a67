"""Cells against direct transcriptions of their updates; state handling; bad input."""

import pytest
import torch
import torch.nn.functional as F

import fernn
from fernn import FlowRNN, FlowRNNCell, TranslationFlow2D


def circ_conv(x, weight, bias=None):
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight, bias)


def transcribe_vanilla(x, flow, U, W):
    """h_t(ν) = ReLU(U ⋆ f_t + W ⋆ roll(h_{t-1}(ν), ν)), a loop over t and ν."""
    B, T, _, H, Wd = x.shape
    h = [torch.zeros(B, U.shape[0], H, Wd, dtype=x.dtype) for _ in flow]
    outs = []
    for t in range(T):
        u = circ_conv(x[:, t], U)
        h = [
            torch.relu(u + circ_conv(torch.roll(h[i], tuple(v), (-2, -1)), W))
            for i, v in enumerate(flow)
        ]
        outs.append(torch.stack(h, 1))
    return torch.stack(outs, 1)


def test_vanilla_equals_transcription(dtype):
    flow = TranslationFlow2D(max_speed=1)
    rnn = FlowRNN(2, 4, flow).to(dtype)
    x = torch.rand(2, 5, 2, 7, 9, dtype=dtype)
    out, state = rnn(x)
    cell = rnn.layers[0]
    assert cell.conv_in.bias is None and cell.conv_hid.bias is None
    ref = transcribe_vanilla(x, flow, cell.conv_in.weight, cell.conv_hid.weight)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert torch.equal(state[0], out[:, -1])


def test_gru_equals_transcription():
    flow = TranslationFlow2D(velocities=[(0, 0), (1, 2)])
    rnn = FlowRNN(1, 3, flow, cell="gru").double()
    x = torch.rand(1, 3, 1, 6, 6, dtype=torch.float64)
    cell = rnn.layers[0]
    Uz, Ur, Un = cell.conv_in.weight.chunk(3)
    bz, br, bn = cell.conv_in.bias.chunk(3)
    Wz, Wr, Wn = cell.conv_hid.weight.chunk(3)
    h = [torch.zeros(1, 3, 6, 6, dtype=torch.float64) for _ in flow]
    for t in range(3):
        f = x[:, t]
        new = []
        for i, v in enumerate(flow):
            hs = torch.roll(h[i], v, (-2, -1))
            z = torch.sigmoid(circ_conv(f, Uz, bz) + circ_conv(hs, Wz))
            r = torch.sigmoid(circ_conv(f, Ur, br) + circ_conv(hs, Wr))
            n = torch.tanh(circ_conv(f, Un, bn) + r * circ_conv(hs, Wn))
            new.append((1 - z) * n + z * hs)
        h = new
    out, _ = rnn(x)
    torch.testing.assert_close(out[:, -1], torch.stack(h, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell", fernn.CELL_TYPES)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_state_continuation(cell, num_layers):
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1), cell=cell, num_layers=num_layers)
    x = torch.rand(2, 6, 1, 8, 8)
    full, state_full = rnn(x)
    first, state = rnn(x[:, :2])
    second, state = rnn(x[:, 2:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full, rtol=0, atol=1e-6)
    if cell == "lstm":
        assert isinstance(state, tuple) and state[0].shape == (num_layers, 2, 9, 3, 8, 8)
    else:
        assert state.shape == (num_layers, 2, 9, 3, 8, 8)


def test_single_step_cell_matches_stack():
    flow = TranslationFlow2D(max_speed=1)
    rnn = FlowRNN(1, 3, flow)
    x = torch.rand(2, 3, 1, 8, 8)
    out, _ = rnn(x)
    h = None
    for t in range(3):
        h = rnn.layers[0](x[:, t], h)
    torch.testing.assert_close(h, out[:, -1])


def test_parameter_count_does_not_depend_on_V():
    counts = {
        r: sum(p.numel() for p in FlowRNN(1, 8, TranslationFlow2D(max_speed=r)).parameters())
        for r in (0, 1, 2)
    }
    assert len(set(counts.values())) == 1


def test_dropout_only_between_layers_and_only_in_training():
    rnn = FlowRNN(1, 4, TranslationFlow2D(max_speed=1), num_layers=2, dropout=0.5)
    x = torch.rand(1, 3, 1, 6, 6)
    rnn.eval()
    a, _ = rnn(x)
    b, _ = rnn(x)
    assert torch.equal(a, b)
    rnn.train()
    c, _ = rnn(x)
    assert not torch.equal(a, c)


def test_gradients_reach_every_parameter():
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1), cell="lstm", num_layers=2)
    out, _ = rnn(torch.rand(2, 4, 1, 6, 6))
    out.square().mean().backward()
    for name, p in rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda: torch.rand(2, 1, 8, 8), r"\(B, T, C=1, H, W\); got \(2, 1, 8, 8\)"),
        (lambda: torch.rand(2, 3, 2, 8, 8), r"C=1 input channels.*C=2"),
    ],
)
def test_bad_input_names_shapes(make_input, message):
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1))
    with pytest.raises(ValueError, match=message):
        rnn(make_input())


def test_bad_state_names_shapes():
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1))
    x = torch.rand(2, 3, 1, 8, 8)
    with pytest.raises(ValueError, match=r"\(1, 2, 9, 3, 8, 8\).*got \(1, 2, 25, 3, 8, 8\)"):
        rnn(x, torch.zeros(1, 2, 25, 3, 8, 8))
    lstm = FlowRNN(1, 3, TranslationFlow2D(max_speed=1), cell="lstm")
    with pytest.raises(ValueError, match="pair"):
        lstm(x, torch.zeros(1, 2, 9, 3, 8, 8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cell="transformer"), "cell must be one of"),
        (dict(nonlinearity="swish"), "nonlinearity must be one of"),
        (dict(kernel_size=4), "odd"),
        (dict(padding_mode="reflect"), "padding_mode"),
        (dict(transport="magic"), "transport"),
        (dict(num_layers=0), "num_layers"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowRNN(1, 3, TranslationFlow2D(max_speed=1), **kwargs)


def test_flow_must_be_a_flow():
    with pytest.raises(TypeError, match="Flow"):
        FlowRNN(1, 3, [(0, 0)])


def test_cell_rejects_sequence_input():
    cell = FlowRNNCell(1, 3, TranslationFlow2D(max_speed=1))
    with pytest.raises(ValueError, match="one frame"):
        cell(torch.rand(2, 5, 1, 8, 8))


@pytest.mark.parametrize("cell", fernn.CELL_TYPES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_checkpointing_over_time_gives_identical_outputs_and_gradients(cell, num_layers):
    flow = TranslationFlow2D(max_speed=1)
    plain = FlowRNN(1, 3, flow, cell=cell, num_layers=num_layers)
    ckpt = FlowRNN(1, 3, flow, cell=cell, num_layers=num_layers, checkpoint_every=2)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 5, 1, 8, 8)
    results = []
    for model in (plain, ckpt):
        out, state = model(x)
        loss = out.square().mean() + (state[0] if cell == "lstm" else state).mean()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((out, grads))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("cell", fernn.CELL_TYPES)
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_fused_shift_and_padding_gives_identical_outputs_and_gradients(cell, kernel_size):
    """The fast path (transport gather writes the circular padding) equals the plain path:
    shift, then nn.Conv2d's own circular padding."""
    flow = TranslationFlow2D(max_speed=2)
    fused = FlowRNN(1, 3, flow, cell=cell, num_layers=2, kernel_size=kernel_size)
    plain = FlowRNN(1, 3, flow, cell=cell, num_layers=2, kernel_size=kernel_size)
    plain.load_state_dict(fused.state_dict())
    assert all(layer.fused_padding for layer in fused.layers)
    for layer in plain.layers:
        layer.fused_padding = False
    x = torch.rand(2, 4, 1, 9, 8, dtype=torch.float64)
    fused.double(), plain.double()
    results = []
    for model in (fused, plain):
        out, _ = model(x)
        grads = torch.autograd.grad(out.sin().sum(), list(model.parameters()))
        results.append((out, grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_fused_padding_only_where_it_is_exact():
    flow = TranslationFlow2D(max_speed=1)
    assert not FlowRNN(1, 3, flow, padding_mode="zeros").layers[0].fused_padding
    assert not FlowRNN(1, 3, flow, transport="learned").layers[0].fused_padding
    rot = fernn.RotationFlow2D([0, 90], order=4)
    assert not FlowRNN(1, 3, rot).layers[0].fused_padding
    with pytest.raises(ValueError, match="cannot fuse"):
        FlowRNN(1, 3, rot).layers[0].fused_padding = True


def test_return_sequence_false_keeps_only_the_state():
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1), num_layers=2)
    x = torch.rand(2, 4, 1, 8, 8)
    out, state = rnn(x)
    none, state2 = rnn(x, return_sequence=False)
    assert none is None and torch.equal(state, state2)
