import pytest

from fernn.cli import main
from fernn.showcase import measure_equivariance, write_equivariance_report


def test_models_command_lists_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "fernn_predictor:" in out and "max_speed" in out


def test_showcase_measures_exact_fernn_and_failing_baselines():
    rows = measure_equivariance(cells=("rnn",), velocities=((0, 1),), size=12, steps=5, hidden=4)
    by_model = {r.model: r for r in rows}
    assert by_model["FERNN-V2"].lifted_max <= 1e-5
    assert by_model["G-RNN"].lifted_max is None
    assert by_model["G-RNN"].pooled_rel_l2 > by_model["FERNN-V2"].pooled_rel_l2
    assert by_model["G-RNN+"].lifted_max > 1e-2


def test_report_is_written(tmp_path):
    report = write_equivariance_report(
        tmp_path, cells=("rnn",), velocities=((1, 1),), size=10, steps=4, hidden=4
    )
    text = report.read_text()
    assert "| FERNN-V1 | rnn | (1, 1) |" in text
    assert (tmp_path / "pooled_error.png").stat().st_size > 1000


def test_unknown_command_exits():
    with pytest.raises(SystemExit):
        main(["fly"])
