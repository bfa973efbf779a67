"""The law of FERNN.md §3, exhaustively over V, cells and depths; and the controls that fail."""

import pytest
import torch

import fernn
from fernn import FlowRNN, TranslationFlow2D
from fernn.models import get_model
from fernn.testing import assert_flow_equivariant, flow_equivariance_error

FLOW = TranslationFlow2D(max_speed=1)
# Every velocity of V, plus velocities outside V (only some slices have partners).
INPUT_VELOCITIES = list(FLOW.elements) + [(2, 0), (-2, 1), (2, -2)]


@pytest.mark.parametrize("nu", INPUT_VELOCITIES, ids=str)
@pytest.mark.parametrize("cell", fernn.CELL_TYPES)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_law_is_exact(nu, cell, num_layers, dtype, rtol):
    rnn = FlowRNN(1, 3, FLOW, cell=cell, num_layers=num_layers)
    x = torch.rand(2, 5, 1, 10, 11)  # non-square torus catches swapped axes
    report = flow_equivariance_error(rnn, FLOW, x, nu, dtype=dtype)
    assert report.max_error <= rtol, str(report)
    assert report.scale > 0.01  # the state is not trivially zero
    n_unmatched = sum(1 for v in FLOW if (v[0] - nu[0], v[1] - nu[1]) not in FLOW)
    assert len(report.unmatched) == n_unmatched
    assert len(report.per_velocity) == len(FLOW) - n_unmatched


def test_exact_for_explicit_irregular_velocity_set():
    flow = TranslationFlow2D(velocities=[(0, 0), (1, -2), (2, -4), (-1, 3), (0, 1)])
    rnn = FlowRNN(2, 3, flow, cell="gru", num_layers=2, kernel_size=5, nonlinearity="gelu")
    reports = assert_flow_equivariant(rnn, flow, torch.rand(1, 6, 2, 9, 9), dtype=torch.float32)
    assert reports[flow.index((1, -2))].per_velocity[(2, -4)] <= 1e-5


def test_grnn_is_not_flow_equivariant():
    """Control: the same check fails for a G-RNN (V = {0})."""
    trivial = TranslationFlow2D(max_speed=0)
    grnn = FlowRNN(1, 3, trivial)
    x = torch.rand(2, 5, 1, 10, 11)
    report = flow_equivariance_error(
        grnn, trivial, x, (1, 0), output="frames", readout=lambda h: h[:, :, 0]
    )
    assert report.max_error > 0.05
    assert report.per_step[0] < 1e-12  # frame 0 is not moved: the first state agrees
    with pytest.raises(AssertionError, match="not flow equivariant"):
        assert_flow_equivariant(
            grnn, trivial, x, [(1, 0)], output="frames", readout=lambda h: h[:, :, 0]
        )


def test_grnn_plus_is_not_flow_equivariant():
    rnn = FlowRNN(1, 3, FLOW, transport="learned")
    report = flow_equivariance_error(rnn, FLOW, torch.rand(2, 5, 1, 10, 11), (1, 0))
    assert report.max_error > 0.05


def test_zero_padding_breaks_the_law_only_at_the_border():
    rnn = FlowRNN(1, 3, FLOW, padding_mode="zeros")
    report = flow_equivariance_error(rnn, FLOW, torch.rand(1, 4, 1, 12, 12), (0, 1))
    assert report.max_error > 1e-3


def test_pooled_readout_error_is_measured(capsys):
    """The V-pooled readout is only approximately equivariant (edge of V); FERNN.md §3
    quotes a relative (L2) error of about 0.07-0.12 for r = 2 against about 0.33 for a
    G-RNN on 28×28, 12 steps. Measured here and printed, not hidden."""
    flow = TranslationFlow2D(max_speed=2)
    trivial = TranslationFlow2D(max_speed=0)
    x = torch.rand(2, 12, 1, 28, 28)
    fernn_rnn = FlowRNN(1, 8, flow)
    grnn = FlowRNN(1, 8, trivial)
    for nu in [(0, 1), (1, 1), (2, 2)]:
        f = flow_equivariance_error(
            fernn_rnn, flow, x, nu, output="frames", readout=fernn.pool_velocities
        )
        g = flow_equivariance_error(
            grnn, trivial, x, nu, output="frames", readout=fernn.pool_velocities
        )
        print(f"pooled readout ν̂={nu}: FERNN-V2 rel L2 {f.rel_l2:.3f}, G-RNN {g.rel_l2:.3f}")
        assert 0 < f.rel_l2 < 0.2
        assert g.rel_l2 > 1.5 * f.rel_l2


def test_predictor_lifted_state_exact_and_readout_better_than_grnn():
    x = torch.rand(2, 4, 1, 12, 12)
    fernn_model = get_model("fernn_predictor", hidden_channels=6, max_speed=1)
    grnn_model = get_model("grnn_predictor", hidden_channels=6)
    kwargs = dict(output="frames", start=4, forward_kwargs={"pred_len": 3})
    f = flow_equivariance_error(fernn_model, FLOW, x, (0, 1), **kwargs)
    g = flow_equivariance_error(grnn_model, FLOW, x, (0, 1), **kwargs)
    assert f.rel_l2 < g.rel_l2
    # The predictor's encoder is the exact FlowRNN.
    assert_flow_equivariant(fernn_model.rnn, FLOW, x, dtype=torch.float32)


def test_checker_catches_a_wrong_sign():
    """A module that moves its slices the wrong way must fail the check."""

    class Backwards(torch.nn.Module):
        def forward(self, x):
            out, _ = FlowRNN(1, 2, FLOW).to(x.dtype)(torch.flip(x, dims=(-1,)))
            return out

    with pytest.raises(AssertionError):
        assert_flow_equivariant(Backwards(), FLOW, torch.rand(1, 4, 1, 8, 8), [(0, 1)])
