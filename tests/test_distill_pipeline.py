"""The edge pipeline end to end on a tiny run folder: files, edge.json, bad inputs, the CLI subcommand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcompress.config import RunConfig
from fedcompress.data import client_data, test_data
from fedcompress.distill import cli, pipeline
from fedcompress.distill.report import ROW_FIELDS, ROWS, TARGETS
from fedcompress.distill.settings import DEFAULT_EPOCHS, DistillSettings
from fedcompress.errors import ConfigError
from fedcompress.federation.weights import load_arrays, save_arrays
from fedcompress.files import atomic_write_json
from fedcompress.models import build_model, model_from_state
from fedcompress.training import evaluate, make_loader, train_epochs

SETTINGS = {"width": 8, "student-width": 2, "image-size": 16, "proxy-samples": 32, "test-samples": 16, "num-clients": 2}
FILES = ["edge.json", "edge.txt", "student_fp32.onnx", "student_fp32.pt", "student_int8.onnx", "student_pruned.onnx",
         "student_pruned.pt", "teacher.onnx", "teacher.pt"]  # fmt: skip
TINY = DistillSettings(epochs=3, latency_repeats=5, calibration_samples=16, proxy_samples=None, student_width=4)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder as the federation writes it: result.json (config, final, weights) and model.pt."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = RunConfig.from_mapping(SETTINGS)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.width)
    data = client_data(0, 2, samples_per_client=64, image_size=16, non_iid=0.5, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_epochs(model, make_loader(data, 16, torch.Generator().manual_seed(0)), optimizer, 4)
    test = test_data(16, image_size=16, seed=cfg.seed, num_partitions=2, non_iid=cfg.non_iid)
    folder = tmp_path_factory.mktemp("run")
    save_arrays(folder / "model.pt", {k: v.detach().numpy() for k, v in model.state_dict().items()})
    final = {"psnr": evaluate(model, test)["psnr"], "epsilon": None}
    atomic_write_json(folder / "result.json", {"status": "completed", "config": cfg.to_dict(), "final": final,
                                               "weights": "model.pt"})  # fmt: skip
    torch.set_num_threads(threads)
    return folder


@pytest.fixture(scope="module")
def edge(run_dir, tmp_path_factory) -> tuple[dict, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("edge")
    report = pipeline.distill_run(run_dir, out, settings=TINY)
    torch.set_num_threads(threads)
    return report, out


def test_edge_json_has_every_row_field_and_target(edge):
    report, out = edge
    written = json.loads((out / "edge.json").read_text())
    assert written["rows"] == json.loads(json.dumps(report["rows"]))
    assert [row["name"] for row in written["rows"]] == list(ROWS)
    for row in written["rows"]:
        assert set(ROW_FIELDS) <= set(row), row["name"]
        assert row["psnr"] > 0 and 0 < row["ssim"] <= 1
    for row in written["rows"][1:]:
        assert row["latency_ms"] > 0 and row["runnable_bytes"] > 0 and row["runnable_file"].endswith(".onnx")
    noisy = written["rows"][0]
    assert noisy["latency_ms"] is None and noisy["runnable_file"] is None and noisy["params"] == 0
    assert {"teacher_beats_noisy", "student_params_10x", "student_int8_psnr_within_1db", "int8_file_40x",
            "int8_latency_3x"} <= set(written["targets"])  # fmt: skip
    assert all(isinstance(t["met"], bool) for t in written["targets"].values())
    assert written["targets"]["student_params_10x"]["target"] == TARGETS["param_ratio"]
    assert written["targets"]["teacher_beats_noisy"]["target"] == TINY.teacher_margin_db
    assert written["verdict"] and written["settings"]["epochs"] == 3
    table = (out / "edge.txt").read_text()
    assert all(name in table for name in ROWS) and "privacy:" in table and "no client data" in table
    assert "verdict:" in table


def test_every_file_edge_json_lists_is_in_the_output_folder(edge):
    report, out = edge
    listed = {row[key] for row in report["rows"] for key in ("weights_file", "runnable_file") if row[key]}
    assert listed == set(report["files"]) == set(FILES) - {"edge.json", "edge.txt"}
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)  # and nothing else: no .ts, no .fcq8


def test_ratios_and_sizes_are_consistent(edge):
    report, out = edge
    rows = {row["name"]: row for row in report["rows"]}
    teacher, int8 = rows["teacher"], rows["student_int8"]
    assert int8["runnable_bytes"] == (out / "student_int8.onnx").stat().st_size
    assert teacher["weights_bytes"] == (out / "teacher.pt").stat().st_size
    assert int8["size_ratio"] == pytest.approx(teacher["weights_bytes"] / int8["runnable_bytes"])
    assert report["targets"]["int8_file_40x"]["measured"] == int8["size_ratio"]
    assert str(int8["runnable_bytes"]) in report["targets"]["int8_file_40x"]["note"]
    assert int8["speedup"] == pytest.approx(teacher["latency_ms"] / int8["latency_ms"])
    assert int8["psnr_vs_teacher_db"] == pytest.approx(int8["psnr"] - teacher["psnr"])
    assert teacher["psnr_vs_noisy_db"] == pytest.approx(teacher["psnr"] - rows["noisy_input"]["psnr"])
    assert teacher["param_ratio"] == 1.0 and rows["student_fp32"]["param_ratio"] > 10
    # sparsity counts every conv, the unpruned output one too
    assert report["prune"]["sparsity"] == pytest.approx(TINY.prune_amount, abs=0.03)
    assert not report["prune"]["masks_attached"]
    assert rows["student_pruned"]["nonzero_params"] < rows["student_fp32"]["nonzero_params"]


def test_int8_report_says_how_it_was_made(edge):
    report, _ = edge
    q = report["quantize"]
    assert q["format"] == "QDQ" and q["path"] == "post-training static quantization (ORT)"
    assert set(q["candidates"]) == {"minmax", "entropy", "percentile"} and q["calibration_images"] == 16
    assert all("test_psnr" in c and "mse_to_teacher" in c for c in q["candidates"].values())
    # the plain student: every conv + ReLU pair is one int8 kernel; float: the residual subtraction, and one layout
    # change into and one out of onnxruntime's NHWC int8 convolutions
    floats = {g["op"]: g["count"] for g in q["float_ops"]}
    assert q["int8_ops"] == {"QLinearConv": 6} and floats == {"Sub": 1, "Transpose": 2}
    assert report["exports"]["onnx_opset"] == 18 and "dynamo=True" in report["exports"]["exporter"]


def test_teacher_row_scores_the_runs_own_test_set(edge, run_dir):
    report, _ = edge
    final = json.loads((run_dir / "result.json").read_text())["final"]["psnr"]
    assert report["rows"][1]["psnr"] == pytest.approx(final, abs=1e-6)
    assert report["source"]["final_psnr"] == final


def test_written_models_reload_and_agree_at_another_batch_and_image_size(edge):
    report, out = edge
    x = torch.rand(3, 1, 20, 12, generator=torch.Generator().manual_seed(0))
    pruned = model_from_state("plain", 4, load_arrays(out / "student_pruned.pt")).eval()
    import onnxruntime as ort

    def run(name: str) -> np.ndarray:
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        return session.run(None, {"noisy": x.numpy()})[0]

    with torch.no_grad():
        reference = pruned(x).numpy()
    assert np.abs(run("student_pruned.onnx") - reference).max() <= 1e-4
    assert 0 < np.abs(run("student_int8.onnx") - reference).max() < 0.1  # int8 error, not a different model
    assert max(report["exports"]["max_abs_diff"].values()) <= report["exports"]["tolerance"]


# --- bad inputs -----------------------------------------------------------------------------------------------
def test_missing_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        pipeline.distill_run(tmp_path / "nope", tmp_path / "out")


def test_missing_result_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"result\.json"):
        pipeline.distill_run(tmp_path, tmp_path / "out")


def _copy_run(run_dir: Path, to: Path, **changes) -> Path:
    to.mkdir()
    result = json.loads((run_dir / "result.json").read_text()) | changes
    (to / "result.json").write_text(json.dumps(result))
    return to


def test_missing_weights_file(run_dir, tmp_path):
    folder = _copy_run(run_dir, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match=r"model\.pt"):
        pipeline.distill_run(folder, tmp_path / "out")


@pytest.mark.parametrize("model", [("unet", 4), ("dncnn", 8)])
def test_weights_of_another_architecture(run_dir, tmp_path, model):
    folder = _copy_run(run_dir, tmp_path / "run")
    save_arrays(folder / "model.pt", {k: v.numpy() for k, v in build_model(*model).state_dict().items()})
    with pytest.raises(ValueError, match=r"model\.pt is not a unet model at width 8"):
        pipeline.distill_run(folder, tmp_path / "out")


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"config": None}, ValueError, "no 'config'"),
        ({"weights": "../model.pt"}, ValueError, "file name inside the run folder"),
        ({"config": {"width": -3}}, ConfigError, "width"),
    ],
)
def test_bad_result_json(run_dir, tmp_path, changes, error, message):
    folder = _copy_run(run_dir, tmp_path / "run", **changes)
    with pytest.raises(error, match=message):
        pipeline.distill_run(folder, tmp_path / "out")


def test_distill_after_run_builds_the_teacher_from_weights(monkeypatch, tmp_path):
    cfg = RunConfig.from_mapping(SETTINGS)
    weights = {k: v.numpy() for k, v in build_model("unet", 8).state_dict().items()}
    seen = {}
    monkeypatch.setattr(pipeline, "build_edge_model", lambda teacher, c, out, **kw: seen.update(t=teacher, c=c))
    pipeline.distill_after_run(weights, cfg, tmp_path)
    assert seen["c"] is cfg
    assert all(torch.equal(v, torch.from_numpy(weights[k])) for k, v in seen["t"].state_dict().items())
    wrong = {k: v.numpy() for k, v in build_model("unet", 4).state_dict().items()}
    with pytest.raises(ValueError, match="does not fit model"):
        pipeline.distill_after_run(wrong, cfg, tmp_path)


# --- the subcommand -------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedcompress")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_parses_the_distill_subcommand():
    args = _parser().parse_args(["distill", "runs/a", "--out", "edge", "--epochs", "3", "--set", "qat-epochs=2"])
    assert (args.command, args.run_dir, args.out, args.epochs, args.set) == ("distill", "runs/a", "edge", 3,
                                                                             ["qat-epochs=2"])  # fmt: skip
    assert _parser().parse_args(["distill", "runs/a", "--out", "e"]).epochs is None
    for bad in (["distill", "runs/a"], ["distill", "runs/a", "--out", "e", "--epochs", "0"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(bad)


def test_cli_help_names_the_settings_their_defaults_and_the_time(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {DEFAULT_EPOCHS}" in text and "Time: about" in text and "ETA" in text
    for key in ("student-width", "epochs", "prune-amount", "calibration-samples", "calibration=auto", "qat-epochs"):
        assert key in text


def test_cli_handler_passes_the_settings_and_prints_the_table(edge, monkeypatch, capsys):
    report, _ = edge
    calls = []
    monkeypatch.setattr(
        pipeline, "distill_run", lambda run, out, settings: calls.append((run, out, settings)) or report
    )
    args = _parser().parse_args(["distill", "runs/a", "--out", "edge", "--epochs", "2", "--set", "prune-amount=0.5",
                                 "--set", "student-width=3", "--set", "calibration=entropy"])  # fmt: skip
    assert args.func(args) == 0
    expected = DistillSettings(epochs=2, prune_amount=0.5, student_width=3, calibration="entropy")
    assert calls == [("runs/a", "edge", expected)]
    assert "student_int8" in capsys.readouterr().out


def test_cli_handler_refuses_an_unknown_setting_before_any_work(monkeypatch):
    monkeypatch.setattr(pipeline, "distill_run", lambda *a, **k: pytest.fail("must not run"))
    args = _parser().parse_args(["distill", "runs/a", "--out", "edge", "--set", "epoch=3"])
    with pytest.raises(ConfigError, match="unknown distill setting 'epoch'"):
        args.func(args)


def test_cli_handler_reports_a_missing_run(tmp_path):
    args = _parser().parse_args(["distill", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        args.func(args)
