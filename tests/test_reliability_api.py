"""A hostile user of the API (issue 17): every bad argument gets a fernn error that names
it, the value and the fix; checks never pass on NaN; files are never half-written, keep
ordinary modes, and interrupted writes leave recognisable temporaries that are cleaned up.
"""

import hashlib
import math
import os
import stat
import time
import tracemalloc

import pytest
import torch

from fernn import (FlowRNN, FlowRNNCell, GroupConv2d, LiftingConv2d, RotationFlow2D,
                   TranslationFlow2D)
from fernn._atomic import TEMPORARY_PATTERN, atomic_open, is_temporary, remove_stale_temporaries
from fernn.data._download import download_file, mirror_url
from fernn.models import CNN3DClassifier, NextStepPredictor, get_model
from fernn.testing import assert_flow_equivariant, flow_equivariance_error

FLOW = TranslationFlow2D(max_speed=1)


# -- the equivariance checker never passes on NaN / inf --------------------------------------
class NotEquivariant(torch.nn.Module):
    """A control that breaks the law: a fixed, position-dependent gain on the lifted state."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        self.gain = torch.nn.Parameter(torch.linspace(0.5, 1.5, 8))

    def forward(self, x):
        return self.rnn(x)[0] * self.gain


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_checker_refuses_a_non_finite_input(bad, dtype):
    x = torch.rand(1, 3, 1, 8, 8)
    x[0, 1, 0, 2, 3] = bad
    rnn = FlowRNN(1, 2, FLOW)
    for check in (lambda: assert_flow_equivariant(rnn, FLOW, x, dtype=dtype),
                  lambda: flow_equivariance_error(rnn, FLOW, x, (0, 1), dtype=dtype)):
        with pytest.raises(ValueError, match=r"x holds 1 NaN/inf value.*finite input.*nan_to_num"):
            check()


@pytest.mark.parametrize("equivariant", [True, False], ids=["fernn", "control"])
def test_checker_fails_on_nan_weights(equivariant):
    rnn = FlowRNN(1, 2, FLOW)
    module = rnn if equivariant else NotEquivariant(rnn)
    with torch.no_grad():
        rnn.layers[0].conv_in.weight[0, 0, 0, 0] = float("nan")
    x = torch.rand(1, 3, 1, 8, 8)
    report = flow_equivariance_error(module, FLOW, x, (0, 1))
    assert report.nonfinite > 0 and not report.finite and not report.passed(1.0)
    assert math.isnan(report.max_error)
    assert "NaN/inf" in str(report)
    with pytest.raises(AssertionError, match=r"output holds \d+ NaN/inf value.*weights"):
        assert_flow_equivariant(module, FLOW, x, rtol=1e6)


def test_checker_fails_when_only_part_of_the_output_is_nan():
    class PartlyNaN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = FlowRNN(1, 2, FLOW)

        def forward(self, x):
            out = self.rnn(x)[0].clone()
            out[:, -1, 4, 0, 0, 0] = float("nan")  # one value of the last step, slice ν = 0
            return out

    with pytest.raises(AssertionError, match="NaN/inf"):
        assert_flow_equivariant(PartlyNaN(), FLOW, torch.rand(1, 3, 1, 8, 8), rtol=1e6)


def test_finite_controls_behave_as_before():
    """The same checks on finite numbers: the FERNN passes, the control fails."""
    rnn = FlowRNN(1, 2, FLOW)
    x = torch.rand(1, 3, 1, 8, 8)
    reports = assert_flow_equivariant(rnn, FLOW, x)
    assert all(r.finite and r.nonfinite == 0 for r in reports)
    with pytest.raises(AssertionError, match="not flow equivariant"):
        assert_flow_equivariant(NotEquivariant(rnn), FLOW, x)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(velocities=[]), ValueError, r"velocities is empty.*None to check every"),
        (dict(rtol=-1.0), ValueError, r"rtol must be a finite number >= 0, got -1.0"),
        (dict(rtol=float("nan")), ValueError, r"rtol must be .*nan"),
        (dict(rtol="1e-5"), TypeError, r"rtol must be .*'1e-5'"),
        (dict(rtol=float("inf")), ValueError, r"rtol must be .*inf"),
        (dict(dtype=torch.int64), TypeError, r"dtype must be a floating torch.dtype"),
        (dict(x=[[1.0]]), TypeError, r"x as a torch.Tensor.*torch.as_tensor\(x\)"),
        (dict(x=torch.rand(0, 3, 1, 8, 8)), ValueError, r"empty x: B=0"),
        (dict(x=torch.rand(1, 3, 8, 8)), ValueError, r"\(B, T, C, H, W\); got \(1, 3, 8, 8\)"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_checker_arguments(kwargs, error, message):
    args = dict(x=torch.rand(1, 3, 1, 8, 8))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        assert_flow_equivariant(FlowRNN(1, 2, FLOW), FLOW, **args)


# -- RotationFlow2D: no silent rounding, no duplicates modulo 360°, no absurd angles -----------
@pytest.mark.parametrize(
    "angles, order, error, message",
    [
        ([0, 10.0000001], 36, ValueError,
         r"10.0000001° is not a multiple of 360/N = 10°.*nearest multiples are 10° and 20°"),
        ([0, 10 + 2e-8], 36, ValueError, r"not a multiple.*10° and 20°"),
        ([0, 44.9], 8, ValueError, r"44.9° is not a multiple of 360/N = 45°.*0° and 45°"),
        ([0, 360], 36, ValueError, r"360.0° is a full turn.*\|ω\| < 360°.*ω mod 360: 0°"),
        ([0, -370], 36, ValueError, r"-370.0° is a full turn.*ω mod 360: 350°"),
        ([1e300], 36, ValueError, r"1e\+300° is a full turn"),
        ([float("nan")], 36, ValueError, r"must be a finite number of degrees per frame, got nan"),
        ([float("inf")], 36, ValueError, r"finite.*inf"),
        ([-10, 350], 36, ValueError, r"distinct modulo 360°; -10° and 350° coincide"),
        ([90, -270], 4, ValueError, r"distinct modulo 360°; 90° and -270° coincide"),
        ([10, 10.0], 36, ValueError, r"distinct"),
        (["10"], 36, TypeError, r"number of degrees per frame, got '10'"),
        ([True], 36, TypeError, r"number of degrees per frame, got True"),
        ([None], 36, TypeError, r"got None"),
        ([0], 2.5, ValueError, r"order N must be a positive integer, got 2.5"),
        ([0], "36", ValueError, r"order N must be a positive integer, got '36'"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_rotation_flow_refuses(angles, order, error, message):
    with pytest.raises(error, match=message):
        RotationFlow2D(angles, order=order)


def test_rotation_tolerance_is_1e9_relative():
    """Within 1e-9 of the angle (1e-9° below 1°) an angle is a multiple; the rounding of
    a computed k·360/N and of the canonical nine decimals lies well inside."""
    assert RotationFlow2D([0, 10 + 5e-9], order=36).elements == (0.0, 10.0)
    sevenths = RotationFlow2D([k * 360 / 7 for k in range(7)], order=7)
    again = RotationFlow2D(list(sevenths.elements), order=7)  # the nine-decimal form
    assert again == sevenths and again.bins == tuple(range(7))
    fine = RotationFlow2D([0.3, -0.3], order=1200)  # below 1°: 1e-9° absolute
    assert fine.bins == (1, -1)
    with pytest.raises(ValueError, match="not a multiple"):
        RotationFlow2D([0.3 + 3e-9], order=1200)


@pytest.mark.parametrize("bad", [360.0, -360.0, 1e300, float("nan"), 15.0])
def test_rotation_actions_refuse_bad_angles(bad):
    flow = RotationFlow2D([-90, 0, 90], order=36)
    x = torch.rand(1, 2, 1, 8, 8)
    with pytest.raises(ValueError, match="angular velocity"):
        flow.move_frames(x, bad)
    with pytest.raises(ValueError, match="angular velocity"):
        flow.trajectory(x[:, 0], bad, steps=2)


def test_rotation_partners_are_found_modulo_a_full_turn(dtype, rtol):
    """On the whole circle C4 every slice has a partner: ν − ν̂ is taken mod 360° (−180° is
    the 180° slice). The law then holds exactly on every slice — a wrong partner would not."""
    flow = RotationFlow2D([-90, 0, 90, 180], order=4)
    for nu in flow.elements:
        expected = [flow.elements.index(next(w for w in flow.elements
                                             if (w - (v - nu)) % 360 == 0))
                    for v in flow.elements]
        assert flow.partner_indices(nu).tolist() == expected
    assert flow.index(270) == 0 and 270 in flow
    rnn = FlowRNN(1, 2, flow, cell="gru")
    for nu in (90, 180, -90):
        report = flow_equivariance_error(rnn, flow, torch.rand(1, 3, 1, 8, 8), nu, dtype=dtype)
        assert report.unmatched == () and report.max_error <= rtol, str(report)


# -- TranslationFlow2D: no grid built to test for a grid, no absurd speeds ------------------
def test_sparse_fast_velocities_build_no_grid():
    tracemalloc.start()
    try:
        flow = TranslationFlow2D(velocities=[(0, 0), (1500, 0)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # the {-1500..1500}² grid would take about a gigabyte
    assert flow.max_speed is None and flow.radius == 1500 and len(flow) == 2


def test_grid_is_still_recognised():
    grid = TranslationFlow2D(max_speed=2)
    assert TranslationFlow2D(velocities=list(grid.elements)).max_speed == 2
    assert TranslationFlow2D(velocities=list(reversed(grid.elements))).max_speed is None
    nine = [(0, k) for k in range(-4, 5)]  # nine velocities, radius 4, not {-1..1}²
    assert TranslationFlow2D(velocities=nine).max_speed is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(velocities=[(10**12, 0)]), r"\|v_y\|, \|v_x\| <= 2\*\*31 - 1.*\(1000000000000, 0\)"),
        (dict(velocities=[(0, -(10**30))]), r"<= 2\*\*31 - 1"),
        (dict(velocities=[(0.5, 0)]), r"integer pixels per frame.*\(0.5, 0\)"),
        (dict(velocities=[("a", 0)]), r"integer pixels per frame.*'a'"),
        (dict(velocities=[(float("nan"), 0)]), r"integer pixels per frame.*nan"),
        (dict(velocities=[(None, 0)]), r"integer pixels per frame"),
        (dict(velocities=[(1, 2, 3)]), r"pair \(v_y, v_x\)"),
        (dict(max_speed=10**6), r"max_speed=1000000 would make .* velocities.*explicit list"),
        (dict(max_speed=512), r"max_speed <= 511"),
        (dict(max_speed=-1), r"max_speed must be a non-negative integer, got -1"),
        (dict(max_speed=1.5), r"non-negative integer, got 1.5"),
        (dict(max_speed="2"), r"non-negative integer, got '2'"),
        (dict(max_speed=float("inf")), r"non-negative integer, got inf"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_translation_flow_refuses(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TranslationFlow2D(**kwargs)


def test_the_largest_speed_acts_exactly():
    """|v| = 2**31 − 1 is accepted and moves frames by t·v mod the side, as torch.roll."""
    v = 2**31 - 1
    flow = TranslationFlow2D(velocities=[(0, 0), (v, -v)])
    x = torch.rand(1, 4, 1, 5, 7)
    moved = flow.move_frames(x, (v, -v))
    for t in range(4):
        expected = torch.roll(x[:, t], shifts=((t * v) % 5, (-t * v) % 7), dims=(-2, -1))
        assert torch.equal(moved[:, t], expected)


def test_learned_transport_of_an_absurd_radius_is_refused_not_allocated():
    flow = TranslationFlow2D(velocities=[(0, 0), (10**6, 0)])
    assert len(FlowRNN(1, 2, flow).flow) == 2  # the flow transport needs no kernel
    with pytest.raises(ValueError, match=r"2000001×2000001 kernel .*smaller radius"):
        get_model("grnn_plus_predictor", hidden_channels=2, flow=flow)


@pytest.mark.parametrize(
    "n, error, message",
    [
        (-1, ValueError, r"n \(the number of velocities to sample\) must be a non-negative "
                         r"integer, got -1"),
        (2.5, TypeError, r"non-negative integer, got 2.5 \(float\)"),
        (3.0, TypeError, r"got 3.0"),
        ("3", TypeError, r"got '3'"),
        (True, TypeError, r"got True"),
    ],
)
@pytest.mark.parametrize("flow", [FLOW, RotationFlow2D([0, 90], order=4)], ids=repr)
def test_sample_refuses(flow, n, error, message):
    with pytest.raises(error, match=message):
        flow.sample(n)


def test_sample_of_zero_is_empty():
    assert FLOW.sample(0).shape == (0, 2)


@pytest.mark.parametrize("steps, start, error", [(-1, 0, ValueError), (2.5, 0, TypeError),
                                                  (2, 0.5, TypeError), (2, "0", TypeError)])
def test_trajectory_times_are_integers(steps, start, error):
    with pytest.raises(error, match="steps|start"):
        FLOW.trajectory(torch.rand(1, 1, 8, 8), (0, 1), steps=steps, start=start)


# -- sizes that must be positive integers ----------------------------------------------------
def _flow_rnn(**kw):
    args = dict(in_channels=1, hidden_channels=2, flow=FLOW)
    args.update(kw)
    return FlowRNN(**args)


def _cell(**kw):
    args = dict(in_channels=1, hidden_channels=2, flow=FLOW)
    args.update(kw)
    return FlowRNNCell(**args)


def _lifting(**kw):
    args = dict(in_channels=1, out_fields=2, order=4)
    args.update(kw)
    return LiftingConv2d(**args)


def _group(**kw):
    args = dict(in_fields=1, out_fields=2, order=4)
    args.update(kw)
    return GroupConv2d(**args)


def _model(name):
    def build(**kw):
        args = ({} if name == "cnn3d_classifier" else dict(hidden_channels=2)
                if name.startswith("grnn_") else dict(hidden_channels=2, max_speed=1))
        args.update(kw)
        return get_model(name, **args)

    return build


SIZES = [
    (_flow_rnn, "in_channels", 0, ValueError),
    (_flow_rnn, "hidden_channels", 2.5, TypeError),
    (_flow_rnn, "hidden_channels", -3, ValueError),
    (_flow_rnn, "num_layers", 0, ValueError),
    (_flow_rnn, "num_layers", "2", TypeError),
    (_flow_rnn, "kernel_size", 0, ValueError),
    (_flow_rnn, "kernel_size", 4, ValueError),
    (_flow_rnn, "kernel_size", 3.0, TypeError),
    (_flow_rnn, "checkpoint_every", -1, ValueError),
    (_flow_rnn, "checkpoint_every", 1.5, TypeError),
    (_flow_rnn, "dropout", 1.0, ValueError),
    (_flow_rnn, "dropout", float("nan"), ValueError),
    (_flow_rnn, "dropout", "0.1", TypeError),
    (_cell, "in_channels", True, TypeError),
    (_cell, "hidden_channels", 0, ValueError),
    (_cell, "kernel_size", -1, ValueError),
    (_lifting, "in_channels", 0, ValueError),
    (_lifting, "out_fields", 1.5, TypeError),
    (_lifting, "order", 0, ValueError),
    (_group, "in_fields", 0, ValueError),
    (_group, "kernel_size", 2, ValueError),
    (_model("fernn_predictor"), "decoder_layers", -1, ValueError),
    (_model("fernn_predictor"), "decoder_layers", 1.5, TypeError),
    (_model("fernn_predictor"), "in_channels", 0, ValueError),
    (_model("grnn_predictor"), "hidden_channels", 0, ValueError),
    (_model("fernn_classifier"), "num_classes", 0, ValueError),
    (_model("grnn_plus_classifier"), "num_classes", 2.0, TypeError),
    (_model("fernn_classifier"), "encoder_channels", "32", TypeError),
    (_model("fernn_classifier"), "encoder_channels", 32, TypeError),
    (_model("fernn_classifier"), "encoder_channels", (8, 0), ValueError),
    (_model("cnn3d_classifier"), "num_classes", 0, ValueError),
    (_model("cnn3d_classifier"), "base_channels", -4, ValueError),
    (_model("cnn3d_classifier"), "in_channels", 1.5, TypeError),
]


@pytest.mark.parametrize("build, name, value, error", SIZES,
                         ids=[f"{n}={v!r}" for _, n, v, _ in SIZES])
def test_sizes_must_be_positive_integers(build, name, value, error):
    with pytest.raises(error) as info:
        build(**{name: value})
    message = str(info.value)
    assert name.replace("order", "order N") in message, message  # the argument
    bad = value[1] if isinstance(value, tuple) else value
    assert f"got {bad!r}" in message, message  # and the value


def test_decoder_layers_zero_is_allowed():
    """0 is a decoder of just the output convolution (not an error)."""
    model = get_model("fernn_predictor", hidden_channels=2, max_speed=1, decoder_layers=0)
    assert len(model.decoder) == 1


# -- inputs at the public forward: dtype, device, empty dimensions --------------------------
def _forwards():
    rnn = FlowRNN(1, 2, FLOW)
    predictor = get_model("fernn_predictor", hidden_channels=2, max_speed=1)
    classifier = get_model("fernn_classifier", hidden_channels=2, max_speed=1,
                           encoder_channels=(3, 2))
    return [
        ("FlowRNN", rnn, lambda m, x: m(x), (2, 3, 1, 8, 8)),
        ("FlowRNNCell", FlowRNNCell(1, 2, FLOW), lambda m, x: m(x), (2, 1, 8, 8)),
        ("LiftingConv2d", LiftingConv2d(1, 2, order=4), lambda m, x: m(x), (2, 1, 8, 8)),
        ("GroupConv2d", GroupConv2d(1, 2, order=4), lambda m, x: m(x), (2, 4, 8, 8)),
        ("NextStepPredictor", predictor, lambda m, x: m(x, 2), (2, 3, 1, 8, 8)),
        ("SequenceClassifier", classifier, lambda m, x: m(x), (2, 3, 1, 8, 8)),
        ("CNN3DClassifier", CNN3DClassifier(base_channels=2), lambda m, x: m(x), (2, 4, 1, 8, 8)),
    ]


FORWARDS = _forwards()
FORWARD_IDS = [name for name, *_ in FORWARDS]


@pytest.mark.parametrize(
    "dtype, fix",
    [(torch.float64, r"x\.float\(\) or module\.double\(\)"),
     (torch.float16, r"x\.float\(\) or module\.half\(\)"),
     (torch.bfloat16, r"x\.float\(\) or module\.bfloat16\(\)"),
     (torch.int64, r"x\.float\(\)$"),
     (torch.uint8, r"x\.float\(\)$"),
     (torch.bool, r"x\.float\(\)$")],
    ids=str,
)
@pytest.mark.parametrize("who, module, call, shape", FORWARDS, ids=FORWARD_IDS)
def test_input_dtype_must_match_the_module(who, module, call, shape, dtype, fix):
    x = torch.zeros(shape).to(dtype)
    with pytest.raises(TypeError, match=rf"{who}: x has dtype {dtype} but the module's "
                                        rf"parameters are torch.float32; convert one: {fix}"):
        call(module, x)


@pytest.mark.parametrize("who, module, call, shape", FORWARDS, ids=FORWARD_IDS)
def test_input_dims_must_not_be_empty(who, module, call, shape):
    names = {4: "BCHW", 5: "BTCHW"}[len(shape)]
    for axis in range(len(shape)):
        if names[axis] == "C":
            continue  # the channel count is checked against the module (below)
        bad = list(shape)
        bad[axis] = 0
        with pytest.raises(ValueError, match=rf"{who} got an empty x: {names[axis]}\w*=0 in shape"):
            call(module, torch.zeros(bad))


@pytest.mark.parametrize("who, module, call, shape", FORWARDS, ids=FORWARD_IDS)
def test_input_channels_and_type(who, module, call, shape):
    bad = list(shape)
    bad[-3] += 1
    with pytest.raises(ValueError, match=rf"{who}.* built for C={shape[-3]} input channels.*"
                                         rf"C={shape[-3] + 1}"):
        call(module, torch.zeros(bad))
    with pytest.raises(TypeError, match=rf"{who} expects x as a torch.Tensor.*got list"):
        call(module, torch.zeros(shape).tolist())


@pytest.mark.parametrize("who, module, call, shape", FORWARDS, ids=FORWARD_IDS)
def test_input_device_must_match_the_module(who, module, call, shape):
    """A module on another device (here: meta, which needs no accelerator)."""
    on_meta = module.to("meta")
    try:
        with pytest.raises(ValueError, match=rf"{who}: x is on cpu but the module's parameters "
                                             r"are on meta; move one: x.to\('meta'\) or "
                                             r"module.to\('cpu'\)"):
            call(on_meta, torch.zeros(shape))
    finally:
        module.to_empty(device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_input_on_cpu_into_a_cuda_module():
    rnn = FlowRNN(1, 2, FLOW).cuda()
    with pytest.raises(ValueError, match=r"x is on cpu but the module's parameters are on cuda:0"):
        rnn(torch.zeros(2, 3, 1, 8, 8))
    assert rnn(torch.zeros(2, 3, 1, 8, 8, device="cuda"))[0].device.type == "cuda"


def test_state_dtype_and_device_are_checked():
    rnn = FlowRNN(1, 2, FLOW)
    x = torch.rand(2, 3, 1, 8, 8)
    with pytest.raises(TypeError, match=r"state has dtype torch.float64.*state\.float\(\)"):
        rnn(x, torch.zeros(1, 2, 9, 2, 8, 8, dtype=torch.float64))


def test_what_must_keep_working():
    """float64 modules take float64 inputs; under autocast a float32 module takes float32
    inputs and its own bfloat16 feedback (the predictor's decoder loop), but nothing else."""
    x = torch.rand(2, 3, 1, 8, 8)
    rnn = FlowRNN(1, 2, FLOW)
    assert rnn.double()(x.double())[0].dtype == torch.float64
    predictor = get_model("fernn_predictor", hidden_channels=2, max_speed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert predictor(x, 3).dtype == torch.bfloat16
        assert predictor.rnn(x.bfloat16())[0].dtype == torch.bfloat16
        with pytest.raises(TypeError, match=r"x has dtype torch.float64.*x\.float\(\)"):
            predictor(x.double(), 2)
    clf = get_model("fernn_classifier", hidden_channels=2, max_speed=1, encoder_channels=(3, 2))
    assert clf.double()(x.double()).dtype == torch.float64


# -- the predictor's call arguments ----------------------------------------------------------
PREDICTOR_CALLS = [
    (dict(pred_len=0), ValueError, r"pred_len must be a positive integer, got 0"),
    (dict(pred_len=-2), ValueError, r"pred_len must be a positive integer, got -2"),
    (dict(pred_len=2.5), TypeError, r"pred_len must be a positive integer, got 2.5 \(float\)"),
    (dict(pred_len="3"), TypeError, r"pred_len .* got '3'"),
    (dict(pred_len=True), TypeError, r"pred_len .* got True"),
    (dict(teacher_forcing=2.0), ValueError, r"teacher_forcing must lie in \[0, 1\], got 2.0"),
    (dict(teacher_forcing=-0.1), ValueError, r"teacher_forcing must lie in \[0, 1\], got -0.1"),
    (dict(teacher_forcing=float("nan")), ValueError, r"teacher_forcing must lie .* nan"),
    (dict(teacher_forcing="0.5"), TypeError, r"teacher_forcing must be a number"),
    (dict(teacher_forcing=0.5), ValueError, r"teacher_forcing > 0 needs the target frames"),
    (dict(target=torch.rand(2, 6, 1, 8, 8)), ValueError,
     r"target must be \(B, pred_len=4, C, H, W\) = \(2, 4, 1, 8, 8\).*got \(2, 6, 1, 8, 8\)\. "
     r"Slice it: target\[:, :4\]"),
    (dict(target=torch.rand(2, 3, 1, 8, 8)), ValueError,
     r"target must be .*got \(2, 3, 1, 8, 8\)$"),
    (dict(target=torch.rand(3, 4, 1, 8, 8)), ValueError, r"target must be .*got \(3, 4, 1, 8, 8\)"),
    (dict(target=torch.rand(2, 4, 1, 8, 8, dtype=torch.float64)), TypeError,
     r"target has dtype torch.float64.*target\.float\(\)"),
    (dict(target=torch.rand(2, 0, 1, 8, 8)), ValueError, r"empty target: pred_len=0"),
]


@pytest.mark.parametrize("kwargs, error, message", PREDICTOR_CALLS,
                         ids=[str(k)[:40] for k, _, _ in PREDICTOR_CALLS])
def test_predictor_call_arguments(kwargs, error, message):
    model = NextStepPredictor(FLOW, hidden_channels=2).train()
    args = dict(pred_len=4)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        model(torch.rand(2, 3, 1, 8, 8), **args)


def test_predictor_target_of_the_right_length_still_works():
    model = NextStepPredictor(FLOW, hidden_channels=2).train()
    out = model(torch.rand(2, 3, 1, 8, 8), 4, target=torch.rand(2, 4, 1, 8, 8),
                teacher_forcing=1.0)
    assert out.shape == (2, 4, 1, 8, 8)


# -- files: modes, interrupted writes, stale temporaries, mirrors ----------------------------
@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_mode_of_ordinary_files(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "ordinary", "w") as fh:
        fh.write("x")
    with atomic_open(tmp_path / "atomic", "w") as fh:
        fh.write("x")
    assert _mode(tmp_path / "atomic") == _mode(tmp_path / "ordinary") == 0o666 & ~mask


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "private.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    with atomic_open(target, "w") as fh:
        fh.write("new")
    assert target.read_text() == "new" and _mode(target) == 0o600


def test_temporaries_are_recognisable_and_an_error_loses_nothing(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target, "w") as fh:
            fh.write("half")
            seen = [p for p in tmp_path.iterdir() if p != target]
            raise RuntimeError("boom")
    assert len(seen) == 1 and is_temporary(seen[0]), seen
    assert TEMPORARY_PATTERN.match(seen[0].name)["target"] == "metrics.json"
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_remove_stale_temporaries(tmp_path):
    run = tmp_path / "run"
    stale = [
        _write(run / ".model.json.0123456789abcdef.part"),          # this version's name
        _write(run / ".metrics.csv.k2j4_9xz.part"),                 # tempfile.mkstemp's name
        _write(run / "checkpoints" / ".last.ckpt.ffffffffffffffff.part"),
    ]
    kept = [
        _write(run / "model.json", "{}"),
        _write(run / "notes.part"),             # not hidden: not ours
        _write(run / ".x.part"),                # no token
        _write(run / ".model.json.ABCDEF12.part"),  # upper case: not a token we write
        _write(run / ".hidden"),
        _write(run / "checkpoints" / "last.ckpt"),
    ]
    outside = _write(tmp_path / "elsewhere.txt", "keep me")
    if hasattr(os, "symlink"):
        os.symlink(outside, run / ".link.0123456789abcdef.part")
    assert remove_stale_temporaries(run, recursive=False) == [stale[1], stale[0]]
    assert stale[2].exists()
    assert remove_stale_temporaries(run) == [stale[2]]
    assert all(p.exists() for p in kept) and outside.read_text() == "keep me"
    assert remove_stale_temporaries(run) == []


def test_remove_stale_temporaries_by_age_and_odd_directories(tmp_path):
    fresh = _write(tmp_path / ".a.bin.0123456789abcdef.part")
    old = _write(tmp_path / ".b.bin.fedcba9876543210.part")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    assert remove_stale_temporaries(tmp_path, older_than=24 * 3600) == [old]
    assert fresh.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []
    with pytest.raises(NotADirectoryError, match="needs a directory"):
        remove_stale_temporaries(fresh)


@pytest.mark.parametrize("slash", ["", "/"], ids=["no-slash", "slash"])
def test_mirror_with_or_without_a_trailing_slash(tmp_path, slash):
    mirror = tmp_path / "mirror"
    body = b"fernn" * 100
    _write(mirror / "data.bin").write_bytes(body)
    url = mirror.as_uri() + slash
    assert mirror_url(url, "data.bin") == mirror.as_uri() + "/data.bin"
    target = tmp_path / "cache" / "data.bin"
    download_file("data.bin", target, [url], md5=hashlib.md5(body).hexdigest(), progress=False)
    assert target.read_bytes() == body
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]


def test_download_clears_day_old_temporaries_only(tmp_path):
    mirror = tmp_path / "mirror"
    _write(mirror / "data.bin", "payload")
    cache = tmp_path / "cache"
    old = _write(cache / ".data.bin.0123456789abcdef.part", "half")
    fresh = _write(cache / ".other.bin.fedcba9876543210.part", "in progress elsewhere")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    download_file("data.bin", cache / "data.bin", [mirror.as_uri()], progress=False)
    assert not old.exists() and fresh.exists() and (cache / "data.bin").read_text() == "payload"


def test_failed_download_leaves_the_old_file(tmp_path):
    target = _write(tmp_path / "cache" / "data.bin", "the old copy")
    with pytest.raises(RuntimeError, match=r"(?s)could not download data.bin.*missing/data.bin"):
        download_file("data.bin", target, [(tmp_path / "missing").as_uri()], progress=False)
    assert target.read_text() == "the old copy"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]
