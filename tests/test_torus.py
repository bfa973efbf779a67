import pytest
import torch

from fernn import roll2d
from fernn._torus import Conv2d, _roll_flat, _roll_windows, circular_pad


def reference_roll(x, shifts, circular=True):
    """Direct transcription: a Python loop of torch.roll (or a zero-filled copy)."""
    shifts = shifts.expand(*x.shape[:-2], 2)
    out = torch.empty_like(x)
    H, W = x.shape[-2:]
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in x.shape[:-2]]).view(-1, x.dim() - 2):
        idx = tuple(idx.tolist())
        sy, sx = shifts[idx].tolist()
        if circular:
            out[idx] = torch.roll(x[idx], (sy, sx), (0, 1))
        else:
            o = torch.zeros(H, W, dtype=x.dtype)
            for i in range(H):
                for j in range(W):
                    if 0 <= i - sy < H and 0 <= j - sx < W:
                        o[i, j] = x[idx][i - sy, j - sx]
            out[idx] = o
    return out


@pytest.mark.parametrize("strategy", [_roll_flat, _roll_windows], ids=["flat", "windows"])
@pytest.mark.parametrize("circular", [True, False], ids=["torus", "zeros"])
def test_both_strategies_match_reference(strategy, circular):
    x = torch.randn(3, 4, 5, 7)
    shifts = torch.randint(-9, 10, (3, 4, 2))
    assert torch.equal(strategy(x, shifts, circular), reference_roll(x, shifts, circular))


@pytest.mark.parametrize("shape", [(1, 4, 1), (3, 1, 1), (3, 4, 5)])
def test_broadcast_shifts(shape):
    x = torch.randn(3, 4, 5, 6, 6)
    shifts = torch.randint(-3, 4, (*shape, 2))
    assert torch.equal(roll2d(x, shifts), reference_roll(x, shifts))


def test_expanded_input_is_not_copied_wrongly():
    x0 = torch.randn(2, 1, 6, 6)
    x = x0.expand(2, 5, 6, 6)
    shifts = torch.randint(-3, 4, (2, 5, 2))
    assert torch.equal(roll2d(x, shifts), reference_roll(x.contiguous(), shifts))


@pytest.mark.parametrize("circular", [True, False])
def test_gradient_is_the_adjoint(circular):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    shifts = torch.randint(-6, 7, (2, 3, 2))
    assert torch.autograd.gradcheck(lambda t: roll2d(t, shifts, circular), (x,))
    assert torch.autograd.gradgradcheck(lambda t: roll2d(t, shifts, circular), (x,))


def reference_shift_pad(x, shifts, pad, circular):
    """Transcription: shift (loop of torch.roll), then pad the way a convolution would."""
    moved = reference_roll(x, shifts, circular)
    lead = moved.shape[:-2]
    padded = torch.nn.functional.pad(moved.reshape(-1, 1, *moved.shape[-2:]), (pad,) * 4,
                                     mode="circular" if circular else "constant")
    return padded.view(*lead, *padded.shape[-2:])


@pytest.mark.parametrize("circular", [True, False], ids=["torus", "zeros"])
@pytest.mark.parametrize("pad", [1, 2, 5])
def test_shift_with_padding_is_one_gather_of_the_padded_shift(circular, pad):
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    shifts = torch.randint(-8, 9, (1, 3, 2))
    out = roll2d(x, shifts, circular, pad=pad)
    ref = reference_shift_pad(x, shifts, pad, circular)
    assert out.shape == (2, 3, 5 + 2 * pad, 6 + 2 * pad) and torch.equal(out, ref)
    grad = torch.randn_like(out)
    ours, = torch.autograd.grad(out, x, grad)
    theirs, = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: roll2d(t, shifts, circular, pad=pad), (x,))


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_circular_pad_equals_f_pad_with_a_fold_for_backward(pad):
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    out = circular_pad(x, pad)
    ref = torch.nn.functional.pad(x, (pad,) * 4, mode="circular")
    assert torch.equal(out, ref)
    grad = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0],
                               torch.autograd.grad(ref, x, grad)[0], rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: circular_pad(t, pad), (x,))
    with pytest.raises(ValueError, match="circular_pad needs"):
        circular_pad(x, 5)


@pytest.mark.parametrize("padding_mode", ["circular", "zeros"])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_conv2d_is_nn_conv2d_with_a_faster_circular_backward(padding_mode, kernel_size):
    torch.manual_seed(0)
    kwargs = dict(padding=kernel_size // 2, padding_mode=padding_mode, bias=True)
    ours = Conv2d(3, 4, kernel_size, **kwargs).double()
    theirs = torch.nn.Conv2d(3, 4, kernel_size, **kwargs).double()
    theirs.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    results = []
    for conv in (ours, theirs):
        y = conv(x)
        results.append((y, torch.autograd.grad(y.sin().sum(), [x, *conv.parameters()])))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_errors():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="pad must lie in"):
        roll2d(x, torch.zeros(2, 3, 2, dtype=torch.long), pad=5)
    with pytest.raises(TypeError, match="integer shifts"):
        roll2d(x, torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="leading axes"):
        roll2d(x, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="do not broadcast"):
        roll2d(x, torch.zeros(2, 5, 2, dtype=torch.long))
