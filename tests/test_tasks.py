"""The experiments layer by task: the registry, config sections, 0.1.0 configs converted on
load, the task-agnostic engine / CLI / comparison, and a task added from outside."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from fernn.cli import main as cli_main  # noqa: E402
from fernn.experiments import (  # noqa: E402
    Config,
    Task,
    TaskOptions,
    apply_overrides,
    config_from_dict,
    config_to_toml,
    get_task,
    list_tasks,
    load_config,
    load_model,
    register_task,
    save_model,
    write_compare_report,
)
from fernn.experiments import tasks as tasks_pkg  # noqa: E402
from fernn.models import get_model  # noqa: E402

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).parents[1] / "src" / "fernn"


# -- the registry and the layering ---------------------------------------------------------
def test_registry_lists_the_built_in_tasks_and_refuses_unknown_ones():
    assert {"next_step", "kth"} <= set(list_tasks())
    assert get_task("kth").Options().clip_frames == 16
    with pytest.raises(ValueError, match=r"task must be one of \(.*'kth'.*'next_step'"):
        get_task("segmentation")
    with pytest.raises(ValueError, match="already registered"):
        register_task(type(get_task("kth")))


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_no_task_is_named_outside_its_module():
    """The engine, CLI, reports, data modules and checkpoints know no task by name: a task
    name as a string constant (a branch on it) may only appear under experiments/tasks/."""
    names = set(list_tasks())
    outside = [SRC / "cli.py", *sorted((SRC / "experiments").glob("*.py"))]
    assert len(outside) > 5
    for path in outside:
        found = names & _string_constants(path)
        assert not found, f"{path.relative_to(SRC)} names task(s) {sorted(found)}"
    for path in outside:
        assert "task ==" not in path.read_text(), path


# -- config sections -----------------------------------------------------------------------
def test_task_options_are_a_table_and_overrides_reach_it(tmp_path):
    cfg = load_config("tiny")
    assert isinstance(cfg.task_options, get_task("next_step").Options)
    a = apply_overrides(cfg, ["task_options.length_frames=5", "lr=3e-4"])
    b = apply_overrides(cfg, ["length_frames=5", "lr=3e-4"])  # the bare name reaches it too
    assert a == b and a.task_options.length_frames == 5 and a.lr == 3e-4
    text = config_to_toml(a)
    assert "\n[task_options]\n" in text and "\nlength_frames = 5\n" in text
    assert text.index("[task_options]") < text.index("length_frames")
    (tmp_path / "a.toml").write_text(text)
    assert load_config(tmp_path / "a.toml") == a
    assert Config(**a.to_dict()) == a  # plain data round trip (model.json, checkpoints)


@pytest.mark.parametrize("overrides, message", [
    (["task_options.clip_frames=4"], r"unknown task option\(s\) \['clip_frames'\].*valid options: "
                                     r"centred_digits, data_angular_velocities"),
    (["length_frames=0"], "length_frames must be at least 1"),
    (["task_options=3"], "set one option, as task_options.KEY=value"),
    (["nope=1"], r"unknown config key 'nope'.*valid keys: accelerator.*length_frames"),
])
def test_bad_task_options_name_the_key_and_the_valid_ones(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", overrides)


def test_a_task_key_outside_its_table_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('input_frames = 3\n\n[task_options]\npredict_frames = 3\n')
    with pytest.raises(ValueError, match=r"\['input_frames'\].*are options of task 'next_step'.*"
                                         r"\[task_options\] table"):
        load_config(path)
    path.write_text('model = "fernn_predictor"\ntask_options = 3\n')
    with pytest.raises(ValueError, match="task_options in .* must be a table"):
        load_config(path)


def test_every_shipped_config_is_in_the_task_layout():
    """No shipped config relies on the 0.1.0 conversion: task keys sit in [task_options]."""
    import tomllib

    from fernn.experiments import shipped_configs

    common = {f.name for f in dataclasses.fields(Config)}
    for name, path in shipped_configs().items():
        data = tomllib.loads(path.read_text())
        assert set(data) <= common, (name, sorted(set(data) - common))
        cfg = load_config(name)
        assert set(data.get("task_options", {})) <= set(cfg.task_options.keys())


# -- fernn 0.1.0 configs and run directories -----------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "kth_tiny"])
def test_a_fernn_0_1_0_config_loads_with_the_same_meaning(name):
    old = load_config(DATA / f"fernn-0.1.0-{name}.toml")
    new = load_config(name)
    # 0.1.0 wrote every field, with the defaults of the keys the shipped file leaves out.
    assert old.task == new.task and old.model_options == new.model_options
    assert (old.epochs, old.batch_size, old.lr, old.steps_per_epoch) == \
        (new.epochs, new.batch_size, new.lr, new.steps_per_epoch)
    shipped = {k: v for k, v in dataclasses.asdict(new.task_options).items()}
    converted = dataclasses.asdict(old.task_options)
    for key in ("size", "data_max_speed", "clip_frames", "frame_step", "test_speeds", "digits",
                "input_frames", "predict_frames", "length_frames", "velocity_grid"):
        if key in shipped:
            assert converted[key] == shipped[key], key


def test_a_0_1_0_key_of_another_task_with_a_value_is_an_error_not_ignored(tmp_path):
    text = (DATA / "fernn-0.1.0-kth_tiny.toml").read_text()
    path = tmp_path / "old.toml"
    path.write_text(text.replace("length_frames = 70", "length_frames = 30"))
    with pytest.raises(ValueError, match=r"0\.1\.0 config whose key 'length_frames' = 30 belongs "
                                         r"to task 'next_step', not to its task 'kth'.*remove it"):
        load_config(path)
    # 0.1.0 left `size` at 28 when a KTH config did not set it: the conversion keeps that.
    path.write_text(text.replace("size = 16\n", ""))
    assert load_config(path).task_options.size == 28


def test_a_0_1_0_run_directory_still_loads(tmp_path):
    """model.json of 0.1.0 holds the flat config: load_model converts it."""
    import tomllib

    flat = tomllib.loads((DATA / "fernn-0.1.0-tiny.toml").read_text())
    cfg = load_config(DATA / "fernn-0.1.0-tiny.toml")
    model = get_model(cfg.model, **cfg.model_options)
    save_model(model, cfg, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["config"] = flat
    (tmp_path / "model.json").write_text(json.dumps(meta))
    loaded, loaded_cfg = load_model(tmp_path)
    assert loaded_cfg == cfg
    assert config_from_dict(flat) == cfg


# -- task-agnostic comparison --------------------------------------------------------------
def _fake_run(directory: Path, name: str, task: str = "next_step", mse: float = 0.1) -> Path:
    directory.mkdir(parents=True)
    metrics = {"task": task, "name": name, "model": "fernn_predictor", "parameters": 10,
               "digits": "font", "steps": 3, "test_mse": mse, "train_seconds": 1.0,
               "length": {"mean": [mse, 2 * mse], "std": [0.0, 0.0]},
               "velocity": {"kind": "translation", "grid": 1, "trained": 1,
                            "mse": [[mse] * 3] * 3}}
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_compare_tells_runs_that_share_a_name_apart_by_directory(tmp_path):
    a = _fake_run(tmp_path / "runs" / "a", "cpu_fernn_v1", mse=0.1)
    b = _fake_run(tmp_path / "runs" / "b", "cpu_fernn_v1", mse=0.2)
    report = write_compare_report([a, b], tmp_path / "cmp").read_text()
    assert str(a) in report and str(b) in report  # two rows, each named by its directory
    heat_maps = sorted(p.name for p in (tmp_path / "cmp").glob("compare_velocity_*.png"))
    assert len(heat_maps) == 2  # neither overwrote the other
    with pytest.raises(ValueError, match="the same run directory is given twice"):
        write_compare_report([a, a], tmp_path / "cmp2")


def test_compare_refuses_runs_of_different_tasks(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", "x")
    b = _fake_run(tmp_path / "b", "y", task="kth")
    assert cli_main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert "cannot compare runs of different tasks" in err and str(b) in err
    assert not (tmp_path / "cmp").exists()  # nothing written


# -- a task added from outside: one module, one registry line ------------------------------
def test_a_new_task_is_one_class_and_one_registration():
    """A task defined outside fernn plugs into config loading, overrides and TOML: the
    engine-facing parts are exercised end to end by the built-in tasks."""
    from fernn.models import NextStepPredictor

    @dataclasses.dataclass
    class EchoOptions(TaskOptions):
        frames: int = 4

        def validate(self):
            if self.frames < 1:
                raise ValueError(f"frames must be at least 1, got {self.frames}")

    class EchoTask(Task):
        name = "echo_test_task"
        Options = EchoOptions
        model_types = (NextStepPredictor,)
        model_hint = "a next-step predictor"

    register_task(EchoTask)
    try:
        cfg = config_from_dict({"task": "echo_test_task", "task_options": {"frames": 7}})
        assert cfg.task_spec.name == "echo_test_task" and cfg.task_options.frames == 7
        assert apply_overrides(cfg, ["frames=2"]).task_options.frames == 2
        with pytest.raises(ValueError, match="frames must be at least 1"):
            apply_overrides(cfg, ["frames=0"])
        with pytest.raises(ValueError, match="needs a next-step predictor"):
            apply_overrides(cfg, ["model=fernn_classifier"])
    finally:
        del tasks_pkg._TASKS["echo_test_task"]
