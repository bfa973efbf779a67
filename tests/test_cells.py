"""Cells against direct transcriptions of their updates; state handling; bad input."""

import pytest
import torch
import torch.nn.functional as F

import fernn
from fernn import FlowRNN, FlowRNNCell, TranslationFlow2D
from fernn._recurrence import RECURRENCE_NONLINEARITIES, VanillaRecurrence


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
    for layer in (*plain.layers, *fused.layers):  # the padding alone (see the next tests)
        layer.fused_sequence = False
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


@pytest.mark.parametrize("nonlinearity", RECURRENCE_NONLINEARITIES)
@pytest.mark.parametrize("num_layers,kernel_size,given_state,checkpoint_every", [
    (1, 3, False, 0), (2, 3, True, 0), (2, 5, False, 2), (1, 3, True, 3),
])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_fused_sequence_gives_the_same_outputs_and_gradients(
        nonlinearity, num_layers, kernel_size, given_state, checkpoint_every, chunked,
        monkeypatch):
    """The sequence fast path (one autograd node, hand-written backward through time)
    equals the plain path: same outputs, same gradients for input, weights and state —
    with the batch run whole, or one item per chunk."""
    if chunked:
        monkeypatch.setattr(fernn._recurrence, "CPU_CHUNK_BYTES", 1)
    flow = TranslationFlow2D(max_speed=1)
    kwargs = dict(num_layers=num_layers, kernel_size=kernel_size, nonlinearity=nonlinearity)
    fused = FlowRNN(2, 3, flow, checkpoint_every=checkpoint_every, **kwargs).double()
    plain = FlowRNN(2, 3, flow, **kwargs).double()
    plain.load_state_dict(fused.state_dict())
    assert all(layer.fused_sequence for layer in fused.layers)
    for layer in plain.layers:
        layer.fused_sequence = layer.fused_padding = False
    x = torch.randn(2, 5, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(num_layers, 2, 9, 3, 7, 6, dtype=torch.float64, requires_grad=True)
             if given_state else None)
    weights = torch.randn(2, 5, 9, 3, 7, 6, dtype=torch.float64)
    results = []
    for model in (fused, plain):
        out, last = model(x, state)
        loss = (out * weights).sum() + last.square().sum()
        inputs = [x, *model.parameters()] + ([state] if given_state else [])
        results.append((out, last, torch.autograd.grad(loss, inputs)))
    (out_f, last_f, grads_f), (out_p, last_p, grads_p) = results
    torch.testing.assert_close(out_f, out_p, rtol=0, atol=1e-12)
    torch.testing.assert_close(last_f, last_p, rtol=0, atol=1e-12)
    for a, b in zip(grads_f, grads_p):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("given_state", [False, True])
def test_fused_sequence_returning_only_the_state(given_state):
    """return_sequence=False: the top layer returns only its last state (its backward has
    no gradient for the others) — same state and gradients as the plain path."""
    flow = TranslationFlow2D(max_speed=1)
    fused = FlowRNN(2, 3, flow, num_layers=2).double()
    plain = FlowRNN(2, 3, flow, num_layers=2).double()
    plain.load_state_dict(fused.state_dict())
    for layer in plain.layers:
        layer.fused_sequence = False
    x = torch.randn(2, 4, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(2, 2, 9, 3, 6, 5, dtype=torch.float64, requires_grad=True)
             if given_state else None)
    results = []
    for model in (fused, plain):
        none, last = model(x, state, return_sequence=False)
        assert none is None
        inputs = [x, *model.parameters()] + ([state] if given_state else [])
        results.append((last, torch.autograd.grad(last.sin().sum(), inputs)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("lifted", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_vanilla_recurrence_passes_gradcheck(lifted, with_state):
    torch.manual_seed(0)
    V = 3
    u = torch.randn(2, 3, V if lifted else 1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    h0 = (torch.randn(2, V, 2, 5, 4, dtype=torch.float64, requires_grad=True)
          if with_state else None)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    shifts = torch.tensor([[0, 0], [1, -1], [-2, 1]])[None, :, None]
    for keep in (True, False):
        fn = lambda u, h0, w: VanillaRecurrence.apply(u, h0, w, shifts, "tanh", keep)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (u, h0, w))


def test_vanilla_recurrence_in_uneven_chunks_passes_gradcheck(monkeypatch):
    """Three batch items in chunks of two and one (every buffer sliced to the last chunk)."""
    item = 3 * 2 * 5 * 4 * 8  # one item's state in bytes (V=3, C=2, 5×4, float64)
    monkeypatch.setattr(fernn._recurrence, "CPU_CHUNK_BYTES", 2 * item)
    assert fernn._recurrence.batch_chunks(3, item, torch.device("cpu")) == [
        slice(0, 2), slice(2, 3)]
    torch.manual_seed(1)
    u = torch.randn(3, 3, 1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 3, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    shifts = torch.tensor([[0, 0], [1, -1], [-2, 1]])[None, :, None]
    for keep in (True, False):
        fn = lambda u, h0, w: VanillaRecurrence.apply(u, h0, w, shifts, "relu", keep)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (u, h0, w))


@pytest.mark.parametrize("batch,item,limit,expected", [
    (8, 10, 100, [slice(0, 8)]),  # fits: the batch whole
    (8, 10, 40, [slice(0, 4), slice(4, 8)]),  # 80 bytes, 40 a chunk: two of four
    (7, 10, 30, [slice(0, 3), slice(3, 6), slice(6, 7)]),  # ⌈70/30⌉ = 3 chunks of ⌈7/3⌉
    (3, 50, 10, [slice(0, 1), slice(1, 2), slice(2, 3)]),  # items over the limit: one each
    (16, 25, 84, [slice(r, min(r + 3, 16)) for r in range(0, 16, 3)]),  # 3 fit: 6 chunks
])
def test_batch_chunks(batch, item, limit, expected, monkeypatch):
    monkeypatch.setattr(fernn._recurrence, "CPU_CHUNK_BYTES", limit)
    assert fernn._recurrence.batch_chunks(batch, item, torch.device("cpu")) == expected
    assert fernn._recurrence.batch_chunks(batch, item, torch.device("meta")) == [slice(0, batch)]


def test_fused_sequence_skips_the_convolution_of_a_zero_state():
    """From no state, W ⋆ 0 is never computed: one hidden convolution fewer (forward and
    backward) than from an explicit zero state, with the same result."""
    from torch.utils.flop_counter import FlopCounterMode

    rnn = FlowRNN(1, 4, TranslationFlow2D(max_speed=1))
    x = torch.rand(2, 3, 1, 8, 8)
    zeros = torch.zeros(1, 2, 9, 4, 8, 8)
    flops = []
    for state in (None, zeros):
        with FlopCounterMode(display=False) as counter:
            out, _ = rnn(x, state)
            out.sum().backward()
        flops.append(counter.get_total_flops())
        results = out
    torch.testing.assert_close(rnn(x)[0], results, rtol=0, atol=0)
    hidden_conv = 2 * (2 * 9) * 4 * 4 * 9 * 64  # one W ⋆ h forward: B·V images
    # the forward and its weight gradient (no input gradient: the zeros need none)
    assert flops[1] - flops[0] == 2 * hidden_conv


def test_fused_sequence_only_where_it_applies():
    flow = TranslationFlow2D(max_speed=1)
    assert FlowRNN(1, 3, flow).layers[0].fused_sequence
    for kwargs in (dict(cell="gru"), dict(cell="lstm"), dict(nonlinearity="gelu"),
                   dict(padding_mode="zeros"), dict(transport="learned")):
        layer = FlowRNN(1, 3, flow, **kwargs).layers[0]
        assert not layer.can_fuse_sequence and not layer.fused_sequence, kwargs
    rot = FlowRNN(1, 3, fernn.RotationFlow2D([0, 90], order=4)).layers[0]
    assert not rot.fused_sequence
    with pytest.raises(ValueError, match="cannot run its sequence fused"):
        rot.fused_sequence = True


@pytest.mark.parametrize("num_layers", [1, 2])
def test_fused_sequence_under_autocast_runs_in_the_autocast_dtype(num_layers):
    """Under bf16 autocast the fast path computes what autocast makes of the plain path:
    the same bf16 states bit for bit, and gradients as close to float32's as the plain
    path's."""
    torch.manual_seed(0)
    rnn = FlowRNN(1, 4, TranslationFlow2D(max_speed=1), num_layers=num_layers)
    x = torch.rand(2, 4, 1, 8, 8)
    results = {}
    for fused in (True, False):
        for layer in rnn.layers:
            layer.fused_sequence = fused
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = rnn(x)
            loss = out.float().square().mean()
        results[fused] = (out, state, torch.autograd.grad(loss, list(rnn.parameters())))
    out, _ = rnn(x)  # float32, plain path
    reference = torch.autograd.grad(out.square().mean(), list(rnn.parameters()))
    (out_f, state_f, grads_f), (out_p, state_p, grads_p) = results[True], results[False]
    assert out_f.dtype == torch.bfloat16
    assert torch.equal(out_f, out_p) and torch.equal(state_f, state_p)
    for g_f, g_p, ref in zip(grads_f, grads_p, reference):
        scale = ref.abs().max()
        assert (g_f - ref).abs().max() <= 2 * (g_p - ref).abs().max() + 1e-3 * scale
        torch.testing.assert_close(g_f, g_p, rtol=0, atol=3e-2 * scale)


def test_torch_compile_gives_the_eager_results():
    """torch.compile (inductor) of a FlowRNN: the same outputs and gradients as eager."""
    torch.manual_seed(0)
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1))
    x = torch.rand(2, 3, 1, 8, 8)
    results = []
    for model in (rnn, torch.compile(rnn)):
        out, state = model(x)
        grads = torch.autograd.grad(out.square().sum() + state.sum(), list(rnn.parameters()))
        results.append((out, state, grads))
    for a, b in zip(results[0][:2] + results[0][2], results[1][:2] + results[1][2]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_return_sequence_false_keeps_only_the_state():
    rnn = FlowRNN(1, 3, TranslationFlow2D(max_speed=1), num_layers=2)
    x = torch.rand(2, 4, 1, 8, 8)
    out, state = rnn(x)
    none, state2 = rnn(x, return_sequence=False)
    assert none is None and torch.equal(state, state2)
