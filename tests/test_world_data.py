"""MNIST World (FLOWM.md §4): the rendering against a plain per-frame transcription, the
camera rules, determinism per (seed, epoch, index), presets, bad input."""

import numpy as np
import pytest
import torch

from fernn.data import WORLD_PRESETS, MNISTWorld, hashed_uniform, render_font_digits


@pytest.fixture(scope="module")
def digits():
    images, labels = render_font_digits(40, seed=3)
    return images, labels


def _world(ds, digits, N=30, **kw):
    images, labels = digits
    cfg = dict(world_size=N, view_size=16, num_digits=3, context=12, predicted=5,
               max_velocity=2, max_step=6, seed=7, labels=labels, num_sequences=50)
    cfg.update(kw)
    return MNISTWorld(images, **cfg)


def test_views_and_world_match_plain_rendering(digits):
    ds = _world(None, digits)
    out = ds.batch(range(6), extras=True)
    choice = ds.draw(range(6))
    N, w, T = 30, 16, ds.seq_len
    images = torch.as_tensor(digits[0]).numpy().astype(np.float64) / 255.0
    for b in range(6):
        c = np.zeros(2, dtype=np.int64)
        for t in range(T):
            c = (c + out["actions"][b, t].numpy()) % N
            assert np.array_equal(out["centres"][b, t].numpy(), c)
            world = np.zeros((N, N))
            for k in range(3):
                canvas = np.zeros((N, N))
                canvas[:28, :28] = images[int(choice["digit"][b, k])]
                p = choice["position"][b, k].numpy() + t * choice["velocity"][b, k].numpy()
                world += np.roll(canvas, tuple(int(x) for x in p), axis=(0, 1))
                assert np.array_equal(out["positions"][b, t, k].numpy(), p % N)
            world = np.clip(world, 0, 1)
            np.testing.assert_allclose(out["world"][b, t, 0].numpy(), world, atol=1e-6)
            view = world[np.ix_((c[0] - w // 2 + np.arange(w)) % N,
                                (c[1] - w // 2 + np.arange(w)) % N)]
            np.testing.assert_allclose(out["views"][b, t, 0].numpy(), view, atol=1e-6)
    assert out["views"].dtype == torch.float32 and out["actions"].dtype == torch.long
    assert torch.equal(out["labels"], torch.as_tensor(digits[1])[choice["digit"]])


def test_camera_rules(digits):
    ds = _world(None, digits)
    a = ds.batch(range(20))["actions"]
    N, w, s, ctx = 30, 16, 6, 12
    assert (a[:, 0] == 0).all() and (a[:, ctx] == 0).all() and (a.abs() <= s).all()
    for b in range(20):
        seen = np.zeros((N, N), dtype=bool)
        c = np.zeros(2, dtype=np.int64)
        rows = lambda c: np.ix_((c[0] - w // 2 + np.arange(w)) % N,
                                (c[1] - w // 2 + np.arange(w)) % N)
        seen[rows(c)] = True
        for t in range(1, ctx):
            if not seen.all():
                # the move heads for some unseen pixel: shortest toroidal move, clipped
                ys, xs = np.nonzero(~seen)
                d = (np.stack([ys, xs], 1) - c + N // 2) % N - N // 2
                allowed = {tuple(m) for m in np.clip(d, -s, s)}
                assert tuple(a[b, t].tolist()) in allowed
            c = (c + a[b, t].numpy()) % N
            seen[rows(c)] = True
        assert seen.all(), "the context must cover the world"


def test_deterministic_per_item_and_epoch(digits):
    ds = _world(None, digits)
    full = ds.batch([4, 9, 2])
    for j, i in enumerate([4, 9, 2]):
        item = ds[i]
        assert torch.equal(item["views"], full["views"][j])
        assert torch.equal(item["actions"], full["actions"][j])
    assert torch.equal(_world(None, digits).batch([9])["views"][0], full["views"][1])
    ds.set_epoch(1)
    assert not torch.equal(ds.batch([4])["views"][0], full["views"][0])


def test_redraw_and_too_short_context(digits):
    # A short context: some first paths fail to cover and are redrawn; all end covered.
    ds = _world(None, digits, context=8, predicted=0, max_step=8)
    first, covered = ds._walk(hashed_uniform(7, ds.item_keys(range(30)), 24).view(30, 8, 3))
    assert 0 < int(covered.sum()) < 30  # some first paths fail
    a = ds.batch(range(30))["actions"]
    assert torch.equal(a[covered], first[covered])  # kept where they covered
    N, w = 30, 16
    for b in range(30):
        seen = np.zeros((N, N), dtype=bool)
        c = np.zeros(2, dtype=np.int64)
        for t in range(8):
            c = (c + a[b, t].numpy()) % N
            seen[np.ix_((c[0] - w // 2 + np.arange(w)) % N,
                        (c[1] - w // 2 + np.arange(w)) % N)] = True
        assert seen.all()
    with pytest.raises(RuntimeError, match="did not cover"):
        _world(None, digits, context=2, max_step=3).batch([0])


def test_presets(digits):
    images, labels = digits
    po = MNISTWorld.preset("dynamic_po", images, num_sequences=4, predicted=3)
    assert (po.world_size, po.view_size, po.num_digits, po.context) == (50, 32, 5, 50)
    out = po.batch(range(2), extras=True)
    assert out["views"].shape == (2, 53, 1, 32, 32) and out["world"].shape == (2, 53, 1, 50, 50)
    static = MNISTWorld.preset("static_po", images, num_sequences=4, predicted=0).batch(
        range(2), extras=True)
    assert (static["velocities"] == 0).all()
    assert (static["positions"] == static["positions"][:, :1]).all()
    fo = MNISTWorld.preset("dynamic_fo", images, num_sequences=4)
    b = fo.batch(range(2))
    assert fo.world_size == fo.view_size == 32 and fo.num_digits == 3
    assert (b["actions"][:, 1:50].abs().sum() > 0)  # uniform moves from the first step
    still = MNISTWorld.preset("dynamic_fo_no_sm", images, num_sequences=4).batch(range(2))
    assert (still["actions"] == 0).all()
    assert set(WORLD_PRESETS) == {"dynamic_po", "static_po", "dynamic_fo", "dynamic_fo_no_sm"}
    with pytest.raises(ValueError, match="unknown MNIST World preset"):
        MNISTWorld.preset("dynamic", images)


def test_float_bank_and_bad_input(digits):
    images, labels = digits
    a = _world(None, digits).batch(range(3))["views"]
    b = _world(None, (torch.as_tensor(images).float() / 255, labels)).batch(range(3))["views"]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="view_size"):
        MNISTWorld(images, world_size=30, view_size=32)
    with pytest.raises(ValueError, match="do not fit"):
        MNISTWorld(images, world_size=20, view_size=16)
    with pytest.raises(ValueError, match="max_step"):
        MNISTWorld(images, max_step=-1)
    with pytest.raises(IndexError):
        _world(None, digits).batch([50])
