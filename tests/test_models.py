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


def test_classifier_features_obey_the_law_exactly_in_eval():
    """Encoder (circular conv, BatchNorm in eval, ReLU) + FlowRNN: the lifted law is exact."""
    from fernn.testing import assert_flow_equivariant

    flow = TranslationFlow2D(max_speed=1)
    model = get_model("fernn_classifier", hidden_channels=4, encoder_channels=(4, 4), max_speed=1)
    model.train()
    model(torch.rand(4, 3, 1, 10, 10))  # move the BatchNorm running statistics off their init

    class Features(torch.nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, x):
            B, T = x.shape[:2]
            z = self.classifier.encoder(x.flatten(0, 1))
            return self.classifier.rnn(z.view(B, T, *z.shape[1:]))

    assert_flow_equivariant(Features(model), flow, torch.rand(2, 4, 1, 10, 10), dtype=torch.float32)


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
