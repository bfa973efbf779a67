"""MNIST reading/downloading, digit sources, and the Flowing MNIST generator."""

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

import fernn
from fernn.data import (
    FlowingMNIST,
    MNIST_MD5,
    hashed_uniform,
    load_digits,
    load_mnist,
    render_font_digits,
)
from fernn.data._mnist import MNIST_FILES

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_shared = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"shared MNIST test split not found at {SHARED_MNIST}"
)
TEST_FILES = MNIST_FILES["test"]


@pytest.fixture
def mnist_copy(tmp_path):
    """A writable copy of the shared test split."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"shared MNIST test split not found at {SHARED_MNIST}")
    root = tmp_path / "mnist_src"
    root.mkdir()
    for name in TEST_FILES:
        shutil.copy(SHARED_MNIST / name, root / name)
    return root


# -- MNIST -------------------------------------------------------------------------------
@needs_shared
def test_shared_test_split_loads():
    images, labels = load_mnist(SHARED_MNIST, split="test", download=False)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@needs_shared
def test_fernn_data_env_and_mnist_subdir(monkeypatch):
    monkeypatch.setenv("FERNN_DATA", str(SHARED_MNIST.parent))  # files are in its mnist/
    images, _ = load_mnist(split="test", download=False)
    assert images.shape == (10000, 28, 28)


def test_missing_offline_names_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, split="train", download=False)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message


def test_md5_mismatch_is_a_clear_error(mnist_copy):
    path = mnist_copy / TEST_FILES[1]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        load_mnist(mnist_copy, split="test", download=False)


def test_raw_files_are_accepted_and_truncation_detected(mnist_copy):
    for name in TEST_FILES:
        raw = gzip.decompress((mnist_copy / name).read_bytes())
        (mnist_copy / name).unlink()
        (mnist_copy / name[:-3]).write_bytes(raw)
    images, labels = load_mnist(mnist_copy, split="test", download=False)
    assert labels[:3].tolist() == [7, 2, 1]
    raw_labels = mnist_copy / TEST_FILES[1][:-3]
    raw_labels.write_bytes(raw_labels.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist(mnist_copy, split="test", download=False)


def test_download_from_mirrors_skips_bad_ones_and_leaves_nothing_behind(mnist_copy, tmp_path):
    bad = tmp_path / "bad_mirror"
    bad.mkdir()
    for name in TEST_FILES:  # a mirror serving corrupt copies
        (bad / name).write_bytes(b"not mnist")
    missing = tmp_path / "missing_mirror"
    target = tmp_path / "cache"
    mirrors = [missing.as_uri() + "/", bad.as_uri() + "/", mnist_copy.as_uri() + "/"]
    images, labels = load_mnist(target, split="test", mirrors=mirrors, progress=False)
    assert images.shape == (10000, 28, 28) and labels[0] == 7
    assert sorted(p.name for p in target.iterdir()) == sorted(TEST_FILES)
    for name in TEST_FILES:
        assert hashlib.md5((target / name).read_bytes()).hexdigest() == MNIST_MD5[name]


def test_download_failure_everywhere_is_clear_and_clean(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in TEST_FILES:
        (bad / name).write_bytes(b"truncated")
    target = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="could not be downloaded") as info:
        load_mnist(target, split="test", mirrors=[bad.as_uri() + "/"], progress=False)
    assert "checksum mismatch" in str(info.value)
    assert list(target.iterdir()) == []  # no partial files


# -- digit sources -----------------------------------------------------------------------
@needs_shared
def test_test_split_carving_is_disjoint_and_explicit():
    parts = {p: load_digits("mnist-test-split", p, root=SHARED_MNIST, download=False)
             for p in ("train", "val", "test")}
    assert [len(parts[p]) for p in ("train", "val", "test")] == [8000, 1000, 1000]
    flat = {p: {bytes(img.numpy().tobytes()) for img in parts[p].images} for p in parts}
    assert not (flat["train"] & flat["test"]) and not (flat["train"] & flat["val"])
    assert parts["train"].source == "mnist-test-split"


def test_font_fallback_is_announced(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_digits("mnist", "train", root=tmp_path, download=False)
    with pytest.warns(UserWarning, match="offline font digits"):
        bank = load_digits("mnist", "train", root=tmp_path, download=False, fallback="font")
    assert bank.source == "font" and bank.images.shape[1:] == (28, 28)


def test_font_digits_are_deterministic_and_varied():
    a, la = render_font_digits(50, seed=1)
    b, lb = render_font_digits(50, seed=1)
    c, _ = render_font_digits(50, seed=2)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert set(la.tolist()) == set(range(10)) or len(set(la.tolist())) >= 8
    assert 0.03 < a.float().mean() / 255 < 0.3  # ink, not blank or saturated
    tail, _ = render_font_digits(10, seed=1, first=40)
    assert torch.equal(tail, a[40:])


def test_bad_source_names():
    with pytest.raises(ValueError, match="digit source"):
        load_digits("emnist")
    with pytest.raises(ValueError, match="part"):
        load_digits("font", "dev")


# -- counter-based random numbers ---------------------------------------------------------
def test_hashed_uniform_is_pure_and_uniform():
    items = torch.arange(20000)
    u = hashed_uniform(7, items, 3)
    assert torch.equal(hashed_uniform(7, items[[5, 3]], 3), u[[5, 3]])
    assert not torch.equal(hashed_uniform(8, items, 3), u)
    assert abs(float(u.mean()) - 0.5) < 0.01 and float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(torch.corrcoef(u.T)[0, 1])) < 0.03


# -- Flowing MNIST -----------------------------------------------------------------------
@pytest.fixture
def bank():
    return load_digits("font", "test")


def test_one_digit_sequence_is_its_first_frame_moved_exactly(bank):
    flow = fernn.TranslationFlow2D(max_speed=2)
    ds = FlowingMNIST(bank, flow, num_digits=1, seq_len=12, size=28, seed=3)
    for i in range(10):
        item = ds[i]
        frames, (v,) = item["frames"], item["velocities"].tolist()
        for t in range(12):
            expected = torch.roll(frames[0], (t * v[0], t * v[1]), (-2, -1))
            assert torch.equal(frames[t], expected)


def test_two_digits_are_a_clipped_sum(bank):
    flow = fernn.TranslationFlow2D(max_speed=1)
    ds = FlowingMNIST(bank, flow, num_digits=2, seq_len=5, seed=0)
    choice = ds.draw([4])
    item = ds[4]
    digits = bank.images.float()[choice["digit"][0]] / 255  # (2, 28, 28)
    expected = 0
    for d in range(2):
        canvas = torch.roll(digits[d], tuple(choice["position"][0, d].tolist()), (0, 1))
        vy, vx = item["velocities"][d].tolist()
        expected = expected + torch.stack([torch.roll(canvas, (t * vy, t * vx), (0, 1))
                                           for t in range(5)])
    assert torch.equal(item["frames"][:, 0], expected.clamp(0, 1))
    assert torch.equal(item["labels"], bank.labels[choice["digit"][0]])


def test_determinism_seeds_epochs_and_batch_equivalence(bank):
    flow = fernn.TranslationFlow2D(max_speed=2)
    a = FlowingMNIST(bank, flow, seed=0, seq_len=6)
    b = FlowingMNIST(bank, flow, seed=0, seq_len=6)
    c = FlowingMNIST(bank, flow, seed=1, seq_len=6)
    assert torch.equal(a[11]["frames"], b[11]["frames"])
    assert not torch.equal(a[11]["frames"], c[11]["frames"])
    batch = a.batch([11, 2, 11])
    assert torch.equal(batch["frames"][0], a[11]["frames"])
    assert torch.equal(batch["frames"][1], a[2]["frames"])
    before = a[11]["frames"]
    a.set_epoch(1)
    assert not torch.equal(a[11]["frames"], before)
    torch.manual_seed(123)  # global RNG plays no part
    assert torch.equal(b[5]["frames"], FlowingMNIST(bank, flow, seed=0, seq_len=6)[5]["frames"])


def test_velocities_come_from_the_set(bank):
    flow = fernn.TranslationFlow2D(max_speed=2)
    ds = FlowingMNIST(bank, flow, num_digits=2, seq_len=2, num_sequences=300)
    seen = {tuple(v) for v in ds.batch(range(300))["velocities"].view(-1, 2).tolist()}
    assert seen <= set(flow.elements) and len(seen) > 20
    sub = FlowingMNIST(bank, flow, velocities=[(0, 1), (-1, 0)], seq_len=2)
    seen = {tuple(v) for v in sub.batch(range(100))["velocities"].view(-1, 2).tolist()}
    assert seen == {(0, 1), (-1, 0)}
    fixed = FlowingMNIST(bank, flow, velocities=[(2, -2)], seq_len=2)  # a grid cell
    assert (fixed.batch(range(10))["velocities"] == torch.tensor([2, -2])).all()


def test_bounded_canvas_loses_digits(bank):
    flow = fernn.TranslationFlow2D(max_speed=2)
    ds = FlowingMNIST(bank, flow, num_digits=1, seq_len=40, size=40, bounded=True,
                      velocities=[(2, 1)])
    frames = ds.batch(range(8))["frames"]
    assert frames[:, 0].sum() > 0
    assert frames[:, -1].sum() == 0  # 80 px down: every digit has left the frame


def test_dataloader_and_shapes(bank):
    ds = FlowingMNIST(bank, fernn.TranslationFlow2D(max_speed=1), seq_len=4, size=32)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["frames"].shape == (3, 4, 1, 32, 32) and batch["frames"].dtype == torch.float32
    assert batch["velocities"].shape == (3, 2, 2) and batch["labels"].shape == (3, 2)
    assert float(batch["frames"].max()) <= 1 and float(batch["frames"].min()) >= 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(images=torch.zeros(0, 28, 28)), ValueError, "non-empty"),
        (dict(images=torch.zeros(4, 30, 30)), ValueError, "do not fit"),
        (dict(images=torch.full((4, 28, 28), 2.0)), ValueError, r"\[0, 1\]"),
        (dict(seq_len=0), ValueError, "seq_len"),
        (dict(velocities=[(0.5, 0)]), ValueError, "integer pixels"),
        (dict(flow="translation"), TypeError, "Flow"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = dict(images=torch.zeros(4, 28, 28), flow=fernn.TranslationFlow2D(max_speed=1))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        FlowingMNIST(**args)


def test_index_out_of_range(bank):
    ds = FlowingMNIST(bank, fernn.TranslationFlow2D(max_speed=1), num_sequences=5)
    with pytest.raises(IndexError):
        ds.batch([5])


class _WrappedTranslation(fernn.Flow):
    """A flow that is not a TranslationFlow2D: exercises the generic generator path
    (centre the digit, move it about the centre, then place it) that rotation flows use."""

    def __init__(self, inner):
        self.inner = inner
        self.elements = inner.elements

    velocities = property(lambda self: self.inner.velocities)

    def _key(self, v):
        return self.inner._key(v)

    def _subtract(self, a, b):
        return self.inner._subtract(a, b)

    def trajectory(self, x0, v, steps, start=0, padding_mode="circular"):
        return self.inner.trajectory(x0, v, steps, start, padding_mode)

    def move_frames(self, x, v, start=0):
        return self.inner.move_frames(x, v, start)

    def move_hidden(self, h, padding_mode="circular"):
        return self.inner.move_hidden(h, padding_mode)

    def move_lifted(self, h, v, time):
        return self.inner.move_lifted(h, v, time)


def test_generic_flow_path_matches_translation_path(bank):
    flow = fernn.TranslationFlow2D(max_speed=2)
    direct = FlowingMNIST(bank, flow, seq_len=6, seed=4)
    generic = FlowingMNIST(bank, _WrappedTranslation(flow), seq_len=6, seed=4)
    a, b = direct.batch(range(16)), generic.batch(range(16))
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["velocities"], b["velocities"])


def test_downloads_go_to_the_cache_not_fernn_data(mnist_copy, tmp_path, monkeypatch):
    readonly = tmp_path / "fernn_data"
    readonly.mkdir()
    monkeypatch.setenv("FERNN_DATA", str(readonly))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    images, _ = load_mnist(split="test", mirrors=[mnist_copy.as_uri() + "/"], progress=False)
    assert images.shape == (10000, 28, 28)
    assert list(readonly.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "xdg" / "fernn" / "mnist").iterdir()) == sorted(
        TEST_FILES
    )
