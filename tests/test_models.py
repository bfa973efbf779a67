import pytest
import torch

import fernn
import fernn._recurrence
from fernn import TranslationFlow2D
from fernn.models import (
    NextStepPredictor,
    get_model,
    list_models,
    model_options,
    register_model,
)


def test_registry_lists_the_paper_models():
    names = list_models()
    for name in ["fernn_predictor", "grnn_predictor", "grnn_plus_predictor",
                 "fernn_classifier", "grnn_classifier", "grnn_plus_classifier", "cnn3d_classifier"]:
        assert name in names


def test_presets_configure_one_code_path():
    assert len(get_model("grnn_predictor", hidden_channels=4).flow) == 1
    assert get_model("fernn_predictor", hidden_channels=4).flow == TranslationFlow2D(max_speed=2)
    assert len(get_model("fernn_predictor", hidden_channels=4, max_speed=1).flow) == 9
    plus = get_model("grnn_plus_predictor", hidden_channels=4, max_speed=1)
    assert isinstance(plus.rnn.layers[0].transport, fernn.LearnedTransport)
    assert plus.rnn.layers[0].transport.kernel.shape == (9, 3, 3)
    flow = TranslationFlow2D(velocities=[(0, 0), (0, 3)])
    assert get_model("fernn_classifier", hidden_channels=4, flow=flow).flow is flow


def test_unknown_names_and_options_raise():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*fernn_predictor"):
        get_model("resnet")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden'\].*hidden_channels"):
        get_model("fernn_predictor", hiden=3)
    with pytest.raises(ValueError, match="max_speed"):  # the G-RNN has no velocity set to set
        get_model("grnn_predictor", max_speed=2)
    with pytest.raises(ValueError, match="only one of"):
        get_model("fernn_predictor", max_speed=1, velocities=[(0, 0)])
    assert "max_speed" in model_options("fernn_classifier")
    with pytest.raises(ValueError, match="pool mode"):  # at construction, not at first use
        get_model("fernn_classifier", hidden_channels=4, pool="median")


def test_register_model_decorator():
    @register_model("test_tiny_predictor")
    def tiny(hidden_channels: int = 2):
        return NextStepPredictor(TranslationFlow2D(max_speed=0), hidden_channels=hidden_channels)

    assert "test_tiny_predictor" in list_models()
    assert get_model("test_tiny_predictor").rnn.hidden_channels == 2
    with pytest.raises(ValueError, match="already registered"):
        register_model("test_tiny_predictor")(tiny)


def test_predictor_readout_equals_transcription():
    """ŷ_{t+1} = D(max_ν roll(h_t(ν), ν)); each prediction is fed back as the next input."""
    model = get_model("fernn_predictor", hidden_channels=4, max_speed=1, decoder_layers=2)
    x = torch.rand(2, 3, 1, 8, 8)
    preds = model(x, pred_len=3)
    flow = model.flow

    def read(h):  # h: (B, V, C, H, W)
        moved = torch.stack([torch.roll(h[:, i], v, (-2, -1)) for i, v in enumerate(flow)], 1)
        return model.decoder(moved.amax(1))

    _, state = model.rnn(x)
    expected = []
    for k in range(3):
        y = read(state[-1])
        expected.append(y)
        _, state = model.rnn(y[:, None], state)
    torch.testing.assert_close(preds, torch.stack(expected, 1))


def test_refeed_last_frame_reproduces_research_decoding():
    model = get_model("fernn_predictor", hidden_channels=4, max_speed=1, refeed_last_frame=True)
    x = torch.rand(1, 3, 1, 8, 8)
    preds = model(x, pred_len=2)
    _, state = model.rnn(torch.cat([x, x[:, -1:]], 1))
    first = model.decoder(state[-1].amax(1))
    torch.testing.assert_close(preds[:, 0], first)


def test_teacher_forcing_and_feedback_gradients():
    model = get_model("fernn_predictor", hidden_channels=4, max_speed=1, detach_feedback=False)
    x, target = torch.rand(2, 3, 1, 8, 8), torch.rand(2, 4, 1, 8, 8)
    model.train()
    forced = model(x, 4, target=target, teacher_forcing=1.0)
    free = model(x, 4)
    assert not torch.allclose(forced[:, 1:], free[:, 1:])
    torch.testing.assert_close(forced[:, 0], free[:, 0])
    with pytest.raises(ValueError, match="target"):
        model(x, 4, teacher_forcing=0.5)
    with pytest.raises(ValueError, match=r"target must be"):
        model(x, 4, target=torch.rand(2, 2, 1, 8, 8))
    free.mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["fernn_classifier", "grnn_classifier", "grnn_plus_classifier"])
def test_classifiers(name):
    model = get_model(name, hidden_channels=4, encoder_channels=(4, 4), num_classes=3)
    logits = model(torch.rand(2, 4, 1, 8, 8))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# -- the KTH models of Table 2 (FERNN.md §5) -----------------------------------------------
@pytest.mark.parametrize("name,options,count", [
    ("fernn_classifier", {}, 241_638),  # FERNN-V2^T
    ("fernn_classifier", {"max_speed": 1}, 241_638),  # FERNN-V1^T: V adds no parameters
    ("grnn_classifier", {}, 241_638),
    ("grnn_plus_classifier", {}, 242_263),  # + 25 learned 5×5 transport kernels
    ("cnn3d_classifier", {}, 208_598),
    # fernn's earlier classifier, kept as an option: circular encoder + a 3×3 input conv
    ("fernn_classifier", {"encoder_padding": "circular", "input_conv": True}, 389_094),
])
def test_kth_models_have_the_research_parameter_counts(name, options, count):
    model = get_model(name, **options)
    assert sum(p.numel() for p in model.parameters()) == count


def _research_classifier(x, w, velocities, transport, training):
    """FERNN.md §5 written out plainly: per frame, the zero-padded encoder conv → BatchNorm →
    ReLU ×3 is the input term u_t; h_t(ν) = tanh(u_t + W ⋆ S_ν h_{t-1}(ν)) with W 3×3
    circular; logits = Linear(mean_xy max_ν h_T(ν)). ``transport``: "shift" (S_ν is
    torch.roll by ν) or "learned" (S_ν is slice ν's own k×k kernel, circular, shared by the
    channels: G-RNN+). In training, BatchNorm uses each frame's batch statistics and
    updates the running ones (returned) once per frame."""
    import torch.nn.functional as F

    B, T, _, H, Wd = x.shape
    running = {i: (w[f"bn{i}.mean"].clone(), w[f"bn{i}.var"].clone()) for i in range(3)}
    C = w["W"].shape[0]
    h = [torch.zeros(B, C, H, Wd, dtype=x.dtype) for _ in velocities]
    for t in range(T):
        u = x[:, t]
        for i in range(3):
            k = w[f"conv{i}"].shape[-1]
            u = F.conv2d(u, w[f"conv{i}"], padding=k // 2)  # zero padding, no bias
            if training:
                mean, var = u.mean(dim=(0, 2, 3)), u.var(dim=(0, 2, 3), unbiased=False)
                n = u.numel() / u.shape[1]
                rm, rv = running[i]
                running[i] = (0.9 * rm + 0.1 * mean, 0.9 * rv + 0.1 * var * n / (n - 1))
            else:
                mean, var = running[i]
            u = (u - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
            u = torch.relu(u * w[f"bn{i}.weight"][:, None, None] + w[f"bn{i}.bias"][:, None, None])
        new = []
        for j, (vy, vx) in enumerate(velocities):
            if transport == "shift":
                moved = torch.roll(h[j], (vy, vx), dims=(-2, -1))
            else:
                kern = w["transport"][j]
                r = kern.shape[-1] // 2
                padded = F.pad(h[j], (r, r, r, r), mode="circular")
                moved = F.conv2d(padded, kern.expand(C, 1, *kern.shape), groups=C)
            hidden = F.conv2d(F.pad(moved, (1, 1, 1, 1), mode="circular"), w["W"])
            new.append(torch.tanh(u + hidden))
        h = new
    pooled = torch.stack(h).amax(dim=0).mean(dim=(-2, -1))  # max over ν, then over x, y
    return pooled @ w["fc.weight"].T + w["fc.bias"], running


def _research_weights(widths, velocities, transport_k, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    w, cin = {}, 1
    for i, (cout, k) in enumerate(zip(widths, (5, 3, 3))):
        w[f"conv{i}"] = rand(cout, cin, k, k) / k
        w[f"bn{i}.weight"], w[f"bn{i}.bias"] = 1 + 0.2 * rand(cout), 0.2 * rand(cout)
        w[f"bn{i}.mean"], w[f"bn{i}.var"] = 0.1 * rand(cout), 0.5 + rand(cout).abs()
        cin = cout
    w["W"] = rand(cin, cin, 3, 3) / 6
    if transport_k:
        w["transport"] = rand(len(velocities), transport_k, transport_k) / transport_k
    w["fc.weight"], w["fc.bias"] = rand(6, cin), rand(6)
    return w


def _load_research_weights(model, w):
    """Our names for the research weights; ``strict`` also says the model has no others."""
    state = {"rnn.layers.0.conv_hid.weight": w["W"], "head.weight": w["fc.weight"],
             "head.bias": w["fc.bias"]}
    for i in range(3):
        conv, bn = f"encoder.{3 * i}", f"encoder.{3 * i + 1}"
        state[f"{conv}.weight"] = w[f"conv{i}"]
        state[f"{bn}.weight"], state[f"{bn}.bias"] = w[f"bn{i}.weight"], w[f"bn{i}.bias"]
        state[f"{bn}.running_mean"], state[f"{bn}.running_var"] = w[f"bn{i}.mean"], w[f"bn{i}.var"]
        state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    if "transport" in w:
        state["rnn.layers.0.transport.kernel"] = w["transport"]
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name,r", [("fernn_classifier", 1), ("fernn_classifier", 2),
                                    ("grnn_classifier", 0), ("grnn_plus_classifier", 1)])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_kth_classifier_equals_a_transcription_of_the_research_model(name, r, training):
    widths, hidden = (3, 4, 5), 5
    velocities = [(vy, vx) for vy in range(-r, r + 1) for vx in range(-r, r + 1)]
    plus = name == "grnn_plus_classifier"
    w = _research_weights(widths, velocities, 2 * r + 1 if plus else 0)
    options = {} if name == "grnn_classifier" else {"max_speed": r}
    model = get_model(name, hidden_channels=hidden, encoder_channels=widths, **options).double()
    _load_research_weights(model, w)
    model.train(training)
    x = torch.rand(3, 4, 1, 9, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits = model(x)
    expected, running = _research_classifier(x, w, velocities, "learned" if plus else "shift",
                                             training)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
    for i in range(3):  # in training, the running statistics moved as the research model's
        bn = model.encoder[3 * i + 1]
        torch.testing.assert_close(bn.running_mean, running[i][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(bn.running_var, running[i][1], rtol=0, atol=1e-12)


def test_encoder_statistics_over_all_frames_differ_in_training_only():
    """``encoder_batch_stats="all_frames"`` normalises over all B·T frames at once: the
    same logits in eval mode, other logits in training (the control of the per-frame test)."""
    per_frame = get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 4),
                          max_speed=1)
    pooled = get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 4),
                       max_speed=1, encoder_batch_stats="all_frames")
    pooled.load_state_dict(per_frame.state_dict())
    x = torch.rand(3, 4, 1, 8, 8)
    assert not torch.allclose(per_frame(x), pooled(x), atol=1e-4)
    pooled.load_state_dict(per_frame.state_dict())  # the running statistics moved apart too
    per_frame.eval(), pooled.eval()
    torch.testing.assert_close(per_frame(x), pooled(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="encoder_batch_stats must be one of"):
        get_model("fernn_classifier", hidden_channels=4, encoder_batch_stats="frame")


def _research_cnn3d(x, w, training=False):
    """The 3D-CNN of FERNN.md §5 written out: Conv3d 3×3×3 (no bias, zero padding 1) →
    BatchNorm3d (running statistics) → ReLU; widths b (time stride 2) → 2b (space stride
    2) → 2b → 4b (space stride 2) → 4b; global average pool; linear."""
    import torch.nn.functional as F

    z = x.transpose(1, 2)  # (B, C, T, H, W)
    strides = [(2, 1, 1), (1, 2, 2), (1, 1, 1), (1, 2, 2), (1, 1, 1)]
    for i, stride in enumerate(strides):
        z = F.conv3d(z, w[f"conv{i}"], stride=stride, padding=1)
        shape = (-1, 1, 1, 1)
        z = (z - w[f"bn{i}.mean"].view(shape)) / torch.sqrt(w[f"bn{i}.var"].view(shape) + 1e-5)
        z = torch.relu(z * w[f"bn{i}.weight"].view(shape) + w[f"bn{i}.bias"].view(shape))
    return z.mean(dim=(2, 3, 4)) @ w["fc.weight"].T + w["fc.bias"]


def test_cnn3d_equals_a_transcription_of_the_research_model():
    b = 3
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    w, state, cin = {}, {}, 1
    for i, cout in enumerate([b, 2 * b, 2 * b, 4 * b, 4 * b]):
        w[f"conv{i}"] = rand(cout, cin, 3, 3, 3) / 5
        w[f"bn{i}.weight"], w[f"bn{i}.bias"] = 1 + 0.2 * rand(cout), 0.2 * rand(cout)
        w[f"bn{i}.mean"], w[f"bn{i}.var"] = 0.1 * rand(cout), 0.5 + rand(cout).abs()
        conv, bn = f"features.{3 * i}", f"features.{3 * i + 1}"
        state[f"{conv}.weight"] = w[f"conv{i}"]
        state[f"{bn}.weight"], state[f"{bn}.bias"] = w[f"bn{i}.weight"], w[f"bn{i}.bias"]
        state[f"{bn}.running_mean"], state[f"{bn}.running_var"] = w[f"bn{i}.mean"], w[f"bn{i}.var"]
        state[f"{bn}.num_batches_tracked"] = torch.tensor(0)
        cin = cout
    w["fc.weight"], w["fc.bias"] = rand(6, cin), rand(6)
    state["head.weight"], state["head.bias"] = w["fc.weight"], w["fc.bias"]
    model = get_model("cnn3d_classifier", base_channels=b).double()
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.rand(2, 7, 1, 11, 10, dtype=torch.float64, generator=g)
    torch.testing.assert_close(model(x), _research_cnn3d(x, w), rtol=0, atol=1e-9)


def test_learned_transport_is_kaiming_normal_fan_out():
    """Each slice's k×k kernel as kaiming_normal_(fan_out, linear) of a (1, 1, k, k)
    weight: std 1/k (the research G-RNN+). 625 draws at r = 2; sqrt(2)/k would fail."""
    torch.manual_seed(0)
    kernel = get_model("grnn_plus_classifier", hidden_channels=4,
                       encoder_channels=(4,)).rnn.layers[0].transport.kernel.detach()
    assert kernel.shape == (25, 5, 5)
    assert abs(float(kernel.std()) - 1 / 5) < 0.02 and abs(float(kernel.mean())) < 0.03


def test_classifier_without_input_conv_checks_its_widths():
    with pytest.raises(ValueError, match=r"encoder_channels=\(4, 8\).*must be 1·hidden_channels = 4"):
        get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 8))
    with pytest.raises(ValueError, match="3·hidden_channels = 12"):
        get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 4), cell="gru")
    assert get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 12), cell="gru")
    assert get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 8),
                     input_conv=True)  # an input convolution maps any width
    with pytest.raises(ValueError, match="encoder_padding must be 'zeros'"):
        get_model("fernn_classifier", hidden_channels=4, encoder_padding="reflect")


def test_identity_input_cell():
    """``input_conv=False``: no U, the input is the input term; refused where it cannot be."""
    from fernn import FlowRNN, FlowRNNCell, RotationFlow2D

    flow = TranslationFlow2D(max_speed=1)
    rnn = FlowRNN(4, 4, flow, input_conv=False, num_layers=2)
    assert isinstance(rnn.layers[0].conv_in, torch.nn.Identity)
    assert not isinstance(rnn.layers[1].conv_in, torch.nn.Identity)  # deeper layers keep U
    x = torch.rand(2, 3, 4, 6, 6)
    assert torch.equal(rnn.layers[0].input_term(x), x.unsqueeze(2))
    with pytest.raises(ValueError, match="in_channels must be 1·hidden_channels = 4"):
        FlowRNNCell(3, 4, flow, input_conv=False)
    with pytest.raises(ValueError, match="bias=True needs an input convolution"):
        FlowRNNCell(4, 4, flow, input_conv=False, bias=True)
    with pytest.raises(ValueError, match="lifting convolution"):
        FlowRNNCell(4, 4, RotationFlow2D([0, 90], order=4), input_conv=False)
    with pytest.raises(TypeError, match="input_conv must be True or False"):
        FlowRNNCell(4, 4, flow, input_conv="no")
    gru = FlowRNNCell(12, 4, flow, cell="gru", input_conv=False)  # no bias anywhere
    assert isinstance(gru.conv_in, torch.nn.Identity)
    assert not any("bias" in n for n, _ in gru.named_parameters())


@pytest.mark.parametrize("input_conv", [False, True])
def test_classifier_features_with_a_circular_encoder_obey_the_law_exactly(input_conv):
    """Encoder (circular conv, BatchNorm in eval, ReLU) + FlowRNN: the lifted law is exact,
    with or without an input convolution after the encoder."""
    from fernn.testing import assert_flow_equivariant

    flow = TranslationFlow2D(max_speed=1)
    model = get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 4), max_speed=1,
                      encoder_padding="circular", input_conv=input_conv)
    model.train()
    model(torch.rand(4, 3, 1, 10, 10))  # move the BatchNorm running statistics off their init
    features = lambda x: model.features(x)  # noqa: E731  (the law on the lifted state)
    model.eval()
    assert_flow_equivariant(features, flow, torch.rand(2, 4, 1, 10, 10), dtype=torch.float32)


def test_the_research_classifier_breaks_the_law_at_the_frame_border():
    """The control: the research model's zero-padded encoder is not exactly equivariant."""
    from fernn.testing import flow_equivariance_error

    flow = TranslationFlow2D(max_speed=1)
    model = get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 4), max_speed=1)
    model.eval()
    report = flow_equivariance_error(lambda x: model.features(x), flow,
                                     torch.rand(2, 4, 1, 10, 10), (0, 1), dtype=torch.float32)
    assert report.max_error > 1e-3


def test_cnn3d():
    model = get_model("cnn3d_classifier", base_channels=4, num_classes=6)
    assert model(torch.rand(2, 8, 1, 16, 16)).shape == (2, 6)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        model(torch.rand(2, 8, 16, 16))


@pytest.mark.parametrize("cell,transport", [("rnn", "flow"), ("lstm", "flow"),
                                            ("rnn", "learned")])
@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
def test_predictor_checkpointing_is_exact(cell, transport, chunked, monkeypatch):
    """Memory mode (encoder segments, decoder groups, the readout recomputed chunk by
    chunk) gives the plain outputs and gradients — also with the learned transport, whose
    parameters the recomputed readout must reach, and one batch item per chunk."""
    if chunked:
        monkeypatch.setattr(fernn._recurrence, "CPU_CHUNK_BYTES", 1)
    kwargs = dict(hidden_channels=3, max_speed=1, cell=cell, decoder_layers=1,
                  transport=transport)
    plain = get_model("fernn_predictor", **kwargs)
    ckpt = get_model("fernn_predictor", checkpoint_every=2, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    x, y = torch.rand(2, 5, 1, 8, 8), torch.rand(2, 3, 1, 8, 8)
    outs = []
    for model in (plain, ckpt):
        pred = model(x, 3)
        grads = torch.autograd.grad((pred - y).square().mean(), list(model.parameters()))
        outs.append((pred, grads))
    assert torch.equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10, 11, 20, 100])
def test_decoder_checkpoint_groups_shrink_by_one(n):
    from fernn.models._predictor import _shrinking_groups

    sizes = _shrinking_groups(n)
    m = sizes[0]
    assert sum(sizes) == n
    assert sizes[:-1] == list(range(m, m - len(sizes) + 1, -1))  # m, m-1, ...
    assert 0 < sizes[-1] <= m - len(sizes) + 1
    assert (m - 1) * m // 2 < n <= m * (m + 1) // 2  # the least such m
