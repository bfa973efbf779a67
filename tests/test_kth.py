"""KTH: the reader, decoder, cache, split, clips, download, and the whole Table 2 pipeline
on a small synthetic KTH-shaped directory (generated .avi clips and a sequences file)."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from fernn.data import (  # noqa: E402
    KTH_ACTIONS,
    KTHClips,
    decode_video,
    download_kth,
    load_kth,
    parse_sequences_file,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

PERSONS = (1, 2, 17, 21, 22)  # train, train, val, test, test
FRAMES = 26  # per video; two sequences of 13 frames each


def _write_video(path: Path, frames: np.ndarray) -> None:
    """``frames`` uint8 (T, 120, 160) grayscale → an MPEG-4 .avi like KTH's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for frame in frames:
            rgb = np.repeat(frame[..., None], 3, axis=-1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _synthetic_frames(action: int, person: int) -> np.ndarray:
    """A bright bar whose width and motion depend on the action: learnable, not trivial."""
    frames = np.full((FRAMES, 120, 160), 40, dtype=np.uint8)
    width = 10 + 8 * action
    for t in range(FRAMES):
        x = (person * 7 + t * (action - 2) * 3) % (160 - width)
        frames[t, 20:100, x : x + width] = 220
    return frames


def _sequences_text() -> str:
    lines = ["Frame ranges of the action sequences (synthetic KTH).", "",
             "person13_handclapping_d3\t\tframes\t1-10, 11-20"]  # listed, absent (as in KTH)
    for person in PERSONS:
        for action in KTH_ACTIONS:
            lines.append(f"person{person:02d}_{action}_d1\t\tframes\t1-13, 14-{FRAMES}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def kth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kth")
    for person in PERSONS:
        for a, action in enumerate(KTH_ACTIONS):
            _write_video(root / action / f"person{person:02d}_{action}_d1_uncomp.avi",
                         _synthetic_frames(a, person))
    (root / "00sequences.txt").write_text(_sequences_text())
    return root


@pytest.fixture
def kth_copy(kth_root, tmp_path):
    """A private copy (tests that change or break files)."""
    import shutil

    copy = tmp_path / "kth"
    shutil.copytree(kth_root, copy, ignore=shutil.ignore_patterns("*.npz"))
    return copy


# -- sequences file --------------------------------------------------------------------
def test_sequences_file_is_parsed_skipping_the_header(kth_root):
    table = parse_sequences_file(kth_root / "00sequences.txt")
    assert len(table) == 1 + len(PERSONS) * len(KTH_ACTIONS)
    assert table["person01_boxing_d1"] == [(1, 13), (14, FRAMES)]


@pytest.mark.parametrize("line, message", [
    ("person01_boxing_d1 frames 1-10; 11-20", "not a frame range"),
    ("person01_boxing_d1 frames 10-5", "empty"),
    ("person01_dancing_d1 frames 1-10", "unknown action"),
    ("person01_boxing frames 1-10", "cannot read"),
])
def test_malformed_sequences_lines_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "00sequences.txt"
    path.write_text("header\n\n" + line + "\n")
    with pytest.raises(ValueError, match=f"00sequences.txt:3: .*{message}"):
        parse_sequences_file(path)


# -- decoding --------------------------------------------------------------------------
def test_decode_gives_grayscale_frames_resized_with_antialiasing(kth_root):
    video = decode_video(kth_root / "boxing" / "person01_boxing_d1_uncomp.avi", size=32)
    assert video.shape == (FRAMES, 32, 32) and video.dtype == torch.uint8
    # Direct transcription: area-average the source frame down to 32×32 (120/32, 160/32).
    source = torch.from_numpy(_synthetic_frames(0, 1)[0]).float()[None, None]
    expected = torch.nn.functional.interpolate(source, size=(32, 32), mode="area")[0, 0]
    assert (video[0].float() - expected).abs().mean() < 6  # MPEG-4 is lossy; layout must match


def test_undecodable_video_names_the_file(tmp_path):
    bad = tmp_path / "person01_boxing_d1_uncomp.avi"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(ValueError, match="person01_boxing_d1_uncomp.avi"):
        decode_video(bad)


# -- loading, cache, split -------------------------------------------------------------
def test_load_decodes_once_then_reads_the_cache(kth_copy, monkeypatch):
    kth = load_kth(kth_copy, size=16, progress=False)
    videos = len(PERSONS) * len(KTH_ACTIONS)
    assert len(kth) == 2 * videos  # the listed-but-absent person13 video is skipped
    assert kth.frames.shape == (videos * FRAMES, 16, 16) and kth.frames.dtype == torch.uint8
    assert kth.lengths.tolist() == [13, FRAMES - 13] * videos
    assert sorted(set(kth.labels.tolist())) == list(range(6))
    cache = kth_copy / "fernn_kth_16px.npz"
    assert cache.is_file() and not list(kth_copy.glob(".*.part"))

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr("fernn.data._kth.decode_video", fail)
    again = load_kth(kth_copy, size=16, progress=False)
    assert torch.equal(again.frames, kth.frames) and torch.equal(again.offsets, kth.offsets)
    # A changed sequences file invalidates the cache.
    text = (kth_copy / "00sequences.txt").read_text().replace(f"1-13, 14-{FRAMES}", f"1-{FRAMES}")
    (kth_copy / "00sequences.txt").write_text(text)
    with pytest.raises(AssertionError, match="decoded again"):
        load_kth(kth_copy, size=16, progress=False)


def test_person_split(kth_root):
    kth = load_kth(kth_root, size=16, progress=False)
    parts = {p: kth.split(p) for p in ("train", "val", "test")}
    assert set(parts["train"].persons.tolist()) == {1, 2}
    assert set(parts["val"].persons.tolist()) == {17}
    assert set(parts["test"].persons.tolist()) == {21, 22}
    assert sum(len(p) for p in parts.values()) == len(kth)
    with pytest.raises(ValueError, match="part must be one of"):
        kth.split("dev")


def test_missing_files_are_named(kth_copy, tmp_path):
    (kth_copy / "walking" / "person21_walking_d1_uncomp.avi").unlink()
    with pytest.raises(FileNotFoundError, match="person21_walking_d1_uncomp.avi.*fernn download kth"):
        load_kth(kth_copy, size=16, progress=False)
    with pytest.raises(FileNotFoundError, match="00sequences.txt not found"):
        load_kth(tmp_path / "empty", progress=False)


def test_range_past_the_video_end_is_cut_with_a_warning(kth_copy):
    text = (kth_copy / "00sequences.txt").read_text().replace(
        f"person01_boxing_d1\t\tframes\t1-13, 14-{FRAMES}", "person01_boxing_d1\t\tframes\t1-13, 14-99")
    (kth_copy / "00sequences.txt").write_text(text)
    with pytest.warns(UserWarning, match="1 frame range"):
        kth = load_kth(kth_copy, size=16, progress=False)
    assert kth.lengths[1] == FRAMES - 13


# -- clips -----------------------------------------------------------------------------
def test_clip_is_the_strided_frames_moved_by_t_v(kth_root):
    """Direct transcription: frame t of a clip = torch.roll(frame[start + step·t], t·v)."""
    test = load_kth(kth_root, size=16, progress=False).split("test")
    clips = KTHClips(test, clip_frames=4, frame_step=3, max_speed=2, seed=5)
    span = 3 * 3 + 1
    assert len(clips) == int((test.lengths // span).sum())
    batch = clips.batch(range(len(clips)))
    assert batch["frames"].shape == (len(clips), 4, 1, 16, 16)
    for i in range(len(clips)):
        seq = int(clips._seq[i])
        start = int(clips._start[i])
        vy, vx = batch["velocities"][i].tolist()
        for t in range(4):
            raw = test.frames[test.offsets[seq] + start + 3 * t].float() / 255
            moved = torch.roll(raw, shifts=(t * vy, t * vx), dims=(0, 1))
            assert torch.equal(batch["frames"][i, t, 0], moved)
    assert batch["velocities"].abs().max() <= 2
    assert len({tuple(v) for v in batch["velocities"].tolist()}) > 5  # drawn per clip


def test_speed_range_zero_means_a_still_camera(kth_root):
    test = load_kth(kth_root, size=16, progress=False).split("test")
    batch = KTHClips(test, clip_frames=4, frame_step=2, max_speed=0).batch([0, 1, 2])
    assert batch["velocities"].abs().sum() == 0


def test_training_clips_are_fresh_each_epoch_and_reproducible(kth_root):
    train = load_kth(kth_root, size=16, progress=False).split("train")
    clips = KTHClips(train, clip_frames=4, frame_step=2, max_speed=1, train=True, seed=3)
    assert len(clips) == len(train)  # one clip per sequence per epoch
    a = clips.batch(range(len(clips)))
    parts = [clips.batch([i])["frames"] for i in range(len(clips))]
    assert torch.equal(a["frames"], torch.cat(parts))  # item i is the same in any batch
    clips.set_epoch(1)
    b = clips.batch(range(len(clips)))
    assert not torch.equal(a["frames"], b["frames"])
    clips.set_epoch(0)
    assert torch.equal(clips.batch(range(len(clips)))["frames"], a["frames"])
    # Flips happen, and only in training.
    plain = KTHClips(train, clip_frames=4, frame_step=2, max_speed=0, train=True, flip=False, seed=3)
    flipped = KTHClips(train, clip_frames=4, frame_step=2, max_speed=0, train=True, seed=3)
    x, y = plain.batch(range(len(plain)))["frames"], flipped.batch(range(len(plain)))["frames"]
    same = (x == y).flatten(1).all(1)
    mirrored = (x.flip(-1) == y).flatten(1).all(1)
    assert (same | mirrored).all() and 0 < int(mirrored.sum()) < len(plain)


def test_clips_longer_than_every_sequence_are_refused(kth_root):
    test = load_kth(kth_root, size=16, progress=False).split("test")
    with pytest.raises(ValueError, match="shorter than"):
        KTHClips(test, clip_frames=16, frame_step=2)


# -- download --------------------------------------------------------------------------
def test_download_from_a_mirror_unpacks_the_action_folders(kth_root, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "00sequences.txt").write_bytes((kth_root / "00sequences.txt").read_bytes())
    for action in KTH_ACTIONS:
        with zipfile.ZipFile(mirror / f"{action}.zip", "w") as zf:
            for video in sorted((kth_root / action).glob("*.avi")):
                zf.write(video, video.name)
    bad = f"file://{tmp_path}/nowhere/"
    target = download_kth(tmp_path / "got", mirrors=(bad, f"file://{mirror}/"), progress=False)
    for action in KTH_ACTIONS:
        got = sorted(p.name for p in (target / action).glob("*.avi"))
        assert got == sorted(p.name for p in (kth_root / action).glob("*.avi"))
        assert not (target / f"{action}.zip").exists()  # unpacked, then removed
    assert len(load_kth(target, size=16, progress=False)) == 2 * len(PERSONS) * len(KTH_ACTIONS)


def test_a_corrupt_archive_is_named(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "00sequences.txt").write_text("person01_boxing_d1 frames 1-5\n")
    for action in KTH_ACTIONS:
        (mirror / f"{action}.zip").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="boxing.zip is not a valid zip archive"):
        download_kth(tmp_path / "got", mirrors=(f"file://{mirror}/",), progress=False)


def test_download_failure_names_every_url(tmp_path):
    with pytest.raises(RuntimeError, match="could not download 00sequences.txt"):
        download_kth(tmp_path / "got", mirrors=(f"file://{tmp_path}/none/",), progress=False)


# -- the pipeline end to end -----------------------------------------------------------
@pytest.fixture(scope="module")
def kth_runs(kth_root, tmp_path_factory):
    pytest.importorskip("lightning")
    from fernn.experiments import load_config, train

    runs = tmp_path_factory.mktemp("kth_runs")
    out = {}
    for name, model in (("fernn", []), ("cnn3d", ["model=cnn3d_classifier",
                                                  "model_options.hidden_channels=none",
                                                  "model_options.encoder_channels=none",
                                                  "model_options.max_speed=none",
                                                  "model_options.base_channels=4"])):
        cfg = load_config("kth_tiny", [f"kth_root={kth_root}", f"name=kth_{name}", *model])
        out[name] = (runs / name, train(cfg, runs / name))
    return out


def test_kth_pipeline_end_to_end(kth_runs):
    run_dir, metrics = kth_runs["fernn"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["task"] == "kth" and saved["steps"] == 4  # 2 epochs × 2 steps
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    confusion = np.asarray(saved["confusion"])
    assert confusion.shape == (6, 6) and confusion.sum() == saved["test_clips"]
    # kth_tiny: clips of 4 frames every 2nd → span 7; 13-frame sequences hold one window each
    assert saved["test_clips"] == 2 * 6 * 2
    assert np.isclose(np.trace(confusion) / confusion.sum(), saved["test_accuracy"])
    assert saved["velocity"]["ranges"] == [0, 1, 2] and len(saved["velocity"]["accuracy"]) == 3
    assert "val_accuracy" in saved
    for name in ("confusion_matrix.png", "velocity_generalisation.png", "learning_curves.png",
                 "report.md", "model.safetensors", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    report = (run_dir / "report.md").read_text()
    assert "test accuracy" in report and "confusion_matrix.png" in report


def test_kth_eval_and_compare_from_the_cli(kth_runs, tmp_path, capsys):
    from fernn.cli import main

    run_dir, metrics = kth_runs["fernn"]
    assert main(["eval", str(run_dir), "--out", str(tmp_path / "m.json")]) == 0
    again = json.loads((tmp_path / "m.json").read_text())
    assert again["test_accuracy"] == metrics["test_accuracy"]  # same clips, same weights
    assert again["confusion"] == metrics["confusion"]
    assert "test accuracy" in capsys.readouterr().out
    dirs = [str(d) for d, _ in kth_runs.values()]
    assert main(["compare", *dirs, "--out", str(tmp_path / "cmp")]) == 0
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "kth_fernn" in text and "kth_cnn3d" in text and "range 2" in text
    assert (tmp_path / "cmp" / "compare_velocity.png").is_file()


def test_kth_config_errors_are_clear(kth_root):
    pytest.importorskip("lightning")
    from fernn.experiments import load_config

    with pytest.raises(ValueError, match="task 'kth' needs a classifier"):
        load_config("kth_tiny", ["model=fernn_predictor", "model_options.encoder_channels=none"])
    with pytest.raises(ValueError, match="task 'next_step' needs a next-step predictor"):
        load_config("kth_tiny", ["task=next_step"])
    with pytest.raises(ValueError, match="task must be one of"):
        load_config("kth_tiny", ["task=segmentation"])
    for name in ("kth_cnn3d", "kth_grnn", "kth_grnn_plus", "kth_fernn_v1", "kth_fernn_v2"):
        cfg = load_config(name)
        assert (cfg.task, cfg.epochs, cfg.batch_size, cfg.grad_clip) == ("kth", 500, 32, 1.0)
        assert cfg.lr == {"kth_cnn3d": 1e-3, "kth_grnn_plus": 1e-4}.get(name, 3e-4)


@pytest.mark.parametrize("name,count", [("kth_grnn", 241_638), ("kth_grnn_plus", 242_263),
                                        ("kth_fernn_v1", 241_638), ("kth_fernn_v2", 241_638),
                                        ("kth_cnn3d", 208_598)])
def test_table2_configs_build_the_research_models(name, count):
    """The shipped Table 2 rows are the research models (FERNN.md §5)."""
    pytest.importorskip("lightning")
    from fernn.experiments import load_config
    from fernn.models import get_model

    cfg = load_config(name)
    model = get_model(cfg.model, **cfg.model_options)
    assert sum(p.numel() for p in model.parameters()) == count


def test_training_without_the_dataset_says_how_to_get_it(tmp_path):
    pytest.importorskip("lightning")
    from fernn.experiments import load_config, train

    with pytest.raises(FileNotFoundError, match="fernn download kth"):
        train(load_config("kth_tiny", [f"kth_root={tmp_path / 'absent'}"]), tmp_path / "run")


def test_a_fernn_classifier_learns_the_synthetic_actions(kth_root, tmp_path):
    """Frames, labels and clips line up: 180 steps of the research model reach well above
    chance (1/6) on the test persons, at every camera speed range (seeds 0, 1, 2: test
    accuracy 0.54, 0.62, 0.58, every range ≥ 0.54)."""
    pytest.importorskip("lightning")
    from fernn.experiments import load_config, train

    cfg = load_config("kth_tiny", [f"kth_root={kth_root}", "epochs=30", "steps_per_epoch=6",
                                   "model_options.hidden_channels=8",
                                   "model_options.encoder_channels=[8, 8, 8]", "lr=3e-3"])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["test_accuracy"] >= 0.45
    assert min(metrics["velocity"]["accuracy"]) >= 0.45


def test_a_kth_run_extended_by_resuming_equals_one_run(kth_root, tmp_path):
    """The epoch's order, starts, velocities and flips are a pure function of (seed,
    epoch): 1 epoch then a resume to 2 gives the weights of 2 epochs in one go."""
    pytest.importorskip("lightning")
    from fernn.experiments import load_config, load_model, train

    base = [f"kth_root={kth_root}", "loggers=[]"]
    train(load_config("kth_tiny", base + ["epochs=1"]), tmp_path / "resumed")
    train(load_config("kth_tiny", base + ["epochs=2"]), tmp_path / "resumed")
    train(load_config("kth_tiny", base + ["epochs=2"]), tmp_path / "straight")
    a, _ = load_model(tmp_path / "resumed")
    b, _ = load_model(tmp_path / "straight")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
