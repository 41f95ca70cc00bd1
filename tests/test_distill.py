"""Edge model parts: distillation, pruning, ONNX export, int8 with onnxruntime, fake quantization, latency."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.data import client_data, proxy_data, test_data
from fedcompress.distill import export
from fedcompress.distill.artefacts import choose_int8
from fedcompress.distill.distill import dihedral, distill_model, fit_to_teacher, kd_loss, mse_to_teacher
from fedcompress.distill.latency import measure_latency
from fedcompress.distill.prune import conv_sparsity, make_permanent, prune_model
from fedcompress.distill.qat import FakeQuant
from fedcompress.distill.quantize import CALIBRATION_METHODS, quantize_onnx
from fedcompress.errors import FedCompressError
from fedcompress.models import build_model, count_parameters, model_from_state
from fedcompress.training import evaluate, make_loader, train_epochs

CFG = RunConfig.from_mapping(
    {"width": 8, "student-width": 2, "image-size": 16, "proxy-samples": 48, "test-samples": 32, "num-clients": 2}
)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared machine two spinning OpenMP threads are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_teacher(cfg: RunConfig, epochs: int = 4) -> nn.Module:
    """A denoiser trained for 16 Adam steps on one site's phantoms: about 2 dB over its noisy input."""
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.width)
    data = client_data(0, 2, samples_per_client=64, image_size=cfg.image_size, non_iid=0.5, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_epochs(model, make_loader(data, 16, torch.Generator().manual_seed(0)), optimizer, epochs)
    return model.eval()


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        return train_teacher(CFG)


@pytest.fixture(scope="module")
def proxy() -> torch.Tensor:
    return torch.from_numpy(proxy_data(CFG.proxy_samples, image_size=CFG.image_size, seed=CFG.seed))


@pytest.fixture(scope="module")
def test_set():
    return test_data(CFG.test_samples, image_size=CFG.image_size, seed=CFG.seed, num_partitions=2, non_iid=0.5)


# --- distillation -------------------------------------------------------------------------------------------
def test_kd_loss_is_zero_for_equal_logits_and_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert float(kd_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)
    p_t = torch.softmax(t / 3.0, 1)
    expected = (p_t * (p_t.log() - torch.log_softmax(s / 3.0, 1))).sum(1).mean() * 9.0
    assert float(kd_loss(s, t, 3.0)) == pytest.approx(float(expected), rel=1e-5)
    assert float(kd_loss(s, t, 3.0)) > 0


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_kd_loss_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature)


def test_dihedral_gives_eight_distinct_transforms():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    images = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(images) == 8
    with pytest.raises(ValueError, match="k must be"):
        dihedral(x, 8)


def test_student_is_smaller_by_the_width_factor():
    cfg = RunConfig.from_mapping({"width": 16, "student-width": 4, "image-size": 8, "proxy-samples": 8})
    big = build_model("unet", 16)
    student, report = distill_model(big, cfg, epochs=1, generator=torch.Generator().manual_seed(0))
    assert student.enc1[0].out_channels == 4
    assert report["student_params"] == count_parameters(student) == count_parameters(build_model("unet", 4))
    assert report["param_ratio"] == count_parameters(big) / count_parameters(student) >= 10


@pytest.mark.parametrize("width", [8, 9, 0])
def test_student_width_must_be_below_the_teacher_width(width):
    with pytest.raises(ValueError, match="student_width"):
        distill_model(build_model("unet", 8), CFG, student_width=width, epochs=1, generator=torch.Generator())


def test_a_student_of_another_family_must_have_fewer_parameters():
    teacher = build_model("unet", 4)
    with pytest.raises(ValueError, match="not fewer than the teacher's"):
        distill_model(teacher, CFG, student_model="plain", student_width=32, epochs=1, generator=torch.Generator())
    student, report = distill_model(
        teacher, CFG, student_model="plain", student_width=4, epochs=1, generator=torch.Generator().manual_seed(0)
    )
    assert report["student_model"] == "plain" and count_parameters(student) < count_parameters(teacher)


def test_teacher_is_worth_distilling(teacher, test_set):
    scores = evaluate(teacher, test_set)
    assert scores["psnr"] > scores["psnr_noisy"] + 1.0


def test_distillation_lowers_the_students_error_against_the_teacher(teacher):
    student, report = distill_model(teacher, CFG, epochs=10, generator=torch.Generator().manual_seed(0))
    assert report["mse_to_teacher_after"] < 0.5 * report["mse_to_teacher_before"]
    assert report["loss_last_epoch"] < report["loss_first_epoch"]
    assert "no client data" in report["privacy"]
    assert not student.training


def test_distillation_is_reproducible_from_the_generator(teacher, proxy):
    runs = [
        distill_model(teacher, CFG, epochs=1, generator=torch.Generator().manual_seed(3), proxy=proxy.numpy())[0]
        for _ in range(2)
    ]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_hint_loss_trains_and_removes_its_hooks(teacher, proxy):
    student = build_model("unet", 2)
    report = fit_to_teacher(student, teacher, proxy, epochs=1, generator=torch.Generator(), hint_weight=0.5)
    assert report["steps"] == 2
    assert all(not m._forward_hooks for m in [*student.modules(), *teacher.modules()])


# --- pruning --------------------------------------------------------------------------------------------------
def test_pruning_reaches_the_sparsity_and_is_permanent(teacher, proxy):
    model = build_model("unet", 4)
    prunable = [m for m in model.modules() if isinstance(m, nn.Conv2d)][:-1]
    total = sum(m.weight.numel() for m in prunable)
    prune_model(model, 0.6)
    fit_to_teacher(model, teacher, proxy, epochs=1, generator=torch.Generator())  # masks must hold in training
    zeros = sum(int((m.weight == 0).sum()) for m in prunable)
    assert zeros == round(0.6 * total)
    assert conv_sparsity(model)["masks_attached"]
    make_permanent(model)
    state = model.state_dict()
    assert set(state) == set(build_model("unet", 4).state_dict())
    assert not conv_sparsity(model)["masks_attached"]
    assert all(not m._forward_pre_hooks for m in model.modules())
    rebuilt = [m for m in model_from_state("unet", 4, state).modules() if isinstance(m, nn.Conv2d)][:-1]
    assert sum(int((m.weight == 0).sum()) for m in rebuilt) == zeros


@pytest.mark.parametrize("amount", [1.0, -0.1, float("nan")])
def test_pruning_rejects_bad_amounts(amount):
    with pytest.raises(ValueError, match="amount"):
        prune_model(build_model("unet", 4), amount)


# --- ONNX export ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_onnx(teacher, proxy, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "teacher.onnx"
    export.export_onnx(teacher, proxy[:2], path)
    return path


def test_onnx_export_has_dynamic_batch_and_image_size_and_matches_pytorch(teacher, teacher_onnx):
    model = onnx.load(str(teacher_onnx))
    dims = [
        [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*model.graph.input, *model.graph.output)
    ]
    assert dims == [["batch", 1, "height", "width"]] * 2
    assert {(o.domain, o.version) for o in model.opset_import} >= {("", export.ONNX_OPSET)}
    module = export.OnnxModule(teacher_onnx)
    for shape in [(1, 1, 16, 16), (3, 1, 24, 20), (2, 1, 17, 9)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        assert export.max_abs_diff(module, teacher, x) <= export.FP32_TOLERANCE


def test_onnx_file_is_one_compact_file_without_debug_metadata(teacher_onnx):
    assert [p.name for p in teacher_onnx.parent.iterdir()] == ["teacher.onnx"]  # no external data file
    data = teacher_onnx.read_bytes()
    assert b"stack_trace" not in data and b"pkg.torch" not in data and str(Path.cwd()).encode() not in data
    model = onnx.load(str(teacher_onnx))
    assert not model.graph.value_info and all(not n.metadata_props and not n.name for n in model.graph.node)
    assert [v.name for v in model.graph.input] == ["noisy"] and [v.name for v in model.graph.output] == ["denoised"]


def test_onnx_export_needs_a_batch_of_two_to_keep_the_batch_axis_free(teacher, proxy, tmp_path):
    with pytest.raises(ValueError, match="example"):
        export.export_onnx(teacher, proxy[:1], tmp_path / "t.onnx")


def test_check_close_refuses_a_large_difference():
    export.check_close("x", 1e-5, 1e-4)
    with pytest.raises(FedCompressError, match="differs"):
        export.check_close("x", 1e-3, 1e-4)
    with pytest.raises(FedCompressError):
        export.check_close("x", float("nan"), 1e-4)


# --- int8 with onnxruntime ------------------------------------------------------------------------------------
def test_int8_is_one_qdq_file_with_per_channel_int8_conv_weights(teacher, teacher_onnx, proxy, test_set, tmp_path):
    path = tmp_path / "int8.onnx"
    report = quantize_onnx(teacher_onnx, path, proxy.numpy(), method="minmax")
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "QLinearConv" not in ops  # QDQ, not QOperator
    convs = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)]
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    int8_kernels = sorted(a.shape for a in weights.values() if a.dtype == np.int8 and a.ndim == 4)
    assert int8_kernels == sorted(tuple(c.weight.shape) for c in convs)
    scales = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and weights.get(n.input[0]) is not None
              and weights[n.input[0]].ndim == 4]  # fmt: skip
    assert all(weights[n.input[1]].shape == (weights[n.input[0]].shape[0],) for n in scales)  # one per channel
    assert not any(a.dtype == np.float32 and a.ndim == 4 for a in weights.values())  # no float kernel left
    assert report["format"] == "QDQ" and "uint8" in report["activations"]
    assert report["int8_ops"] == {"QLinearConv": len(convs)}  # onnxruntime fuses every conv into an int8 kernel
    float_ops = {g["op"] for g in report["float_ops"]}
    assert float_ops >= {"InstanceNormalization", "Sub"} and "Conv" not in float_ops
    assert report["calibration_images"] == len(proxy)
    int8 = export.OnnxModule(path)  # onnxruntime runs the file as it is, at any batch and image size
    assert int8(proxy[:3, :, :12, :8]).shape == (3, 1, 12, 8)
    assert evaluate(teacher, test_set)["psnr"] - evaluate(int8, test_set)["psnr"] < 0.3


def test_every_calibration_method_is_tried_and_the_closest_to_the_teacher_kept(teacher, teacher_onnx, proxy,
                                                                               tmp_path):  # fmt: skip
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    kept, report, files = choose_int8(
        teacher_onnx, teacher, proxy[:16].numpy(), proxy[16:], CALIBRATION_METHODS, tmp_path, scratch
    )
    assert kept == tmp_path / "student_int8.onnx" and set(files) == set(CALIBRATION_METHODS)
    errors = {m: c["mse_to_teacher"] for m, c in report["candidates"].items()}
    assert report["calibration_method"] == min(errors, key=errors.get)
    assert kept.read_bytes() == files[report["calibration_method"]].read_bytes()
    assert len({path.read_bytes() for path in files.values()}) == 3  # three different calibrations, entropy too
    assert report["calibration_images"] == 16 and "not used for calibration" in report["selection"]


def test_quantize_refuses_an_unknown_method_and_empty_calibration(teacher_onnx, proxy, tmp_path):
    with pytest.raises(ValueError, match="method"):
        quantize_onnx(teacher_onnx, tmp_path / "q.onnx", proxy.numpy(), method="kl")
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(teacher_onnx, tmp_path / "q.onnx", proxy.numpy()[:0])


def test_fake_quant_trains_with_pruned_zeros_held_and_removes_cleanly(teacher, proxy):
    model = build_model("unet", 4)
    nn.init.normal_(model.head.weight, std=0.1, generator=torch.Generator().manual_seed(0))  # not the identity
    make_permanent(prune_model(model, 0.5))
    zeros = [m.weight == 0 for m in model.modules() if isinstance(m, nn.Conv2d)]
    weights = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.Conv2d)]
    before = model(proxy[:4]).detach()
    fake = FakeQuant(model, proxy)
    assert not torch.equal(model(proxy[:4]).detach(), before)  # rounding is in the forward pass
    fit_to_teacher(model, teacher, proxy, epochs=1, generator=torch.Generator(), lr=1e-3)
    fake.remove()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(bool((m.weight[z] == 0).all()) for m, z in zip(convs, zeros, strict=True))
    assert any(not torch.equal(m.weight, w) for m, w in zip(convs, weights, strict=True))  # it trained
    assert set(model.state_dict()) == set(build_model("unet", 4).state_dict())
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_default_edge_path_uses_neither_torch_ao_nor_torchscript():
    package = Path(importlib.import_module("fedcompress.distill").__file__).parent
    for source in sorted(package.glob("*.py")):
        tree = ast.parse(source.read_text())
        names = {ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Attribute | ast.ImportFrom)}
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        bad = {n for n in names if "torch.ao" in n or "torch.jit" in n or "quantize_fx" in n}
        assert not bad, f"{source.name}: {sorted(bad)}"
    assert not (package / "int8_file.py").exists()


# --- latency --------------------------------------------------------------------------------------------------
def test_latency_is_interleaved_and_covers_every_candidate():
    calls: list[str] = []
    candidates = {name: (lambda x, name=name: calls.append(name)) for name in "abc"}
    stats = measure_latency(candidates, torch.zeros(1), repeats=3, warmup=0)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert set(stats) == {"a", "b", "c"} and all(s["runs"] == 3 and s["median_ms"] >= 0 for s in stats.values())
    assert torch.get_num_threads() == 1  # restored to the fixture's setting


def test_mse_to_teacher_is_zero_for_the_teacher_itself(teacher, proxy):
    assert mse_to_teacher(teacher, teacher, proxy) == 0.0


def test_every_public_name_imports():
    package = importlib.import_module("fedcompress.distill")
    assert package.__all__ == sorted(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018


def test_proxy_and_test_sets_do_not_overlap(proxy, test_set):
    flat_proxy = {np.asarray(x).tobytes() for x in proxy.numpy()}
    assert not flat_proxy & {x.tobytes() for x in test_set.noisy}
