"""Edge model parts: distillation, pruning, int8, the packed int8 file, exports, latency."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from fedcompress.config import RunConfig
from fedcompress.data import client_data, proxy_data, test_data
from fedcompress.distill import export
from fedcompress.distill.distill import dihedral, distill_model, fit_to_teacher, kd_loss, mse_to_teacher
from fedcompress.distill.int8_file import MAGIC, load_int8, save_int8
from fedcompress.distill.latency import measure_latency
from fedcompress.distill.prune import conv_sparsity, make_permanent, prune_model
from fedcompress.distill.quantize import quantize_int8
from fedcompress.errors import FedCompressError
from fedcompress.models import build_model, count_parameters, model_from_state
from fedcompress.training import evaluate, make_loader, train_epochs

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

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


# --- int8 -----------------------------------------------------------------------------------------------------
def test_int8_quantizes_every_conv_and_names_the_float_ops(teacher, proxy, test_set):
    int8, report = quantize_int8(teacher, proxy)
    convs = {name for name, m in teacher.named_modules() if isinstance(m, nn.Conv2d)}
    assert convs <= set(report["int8_ops"])
    float_ops = {group["op"]: group for group in report["float_ops"]}
    assert float_ops["GroupNorm"]["count"] == 10 and "GroupNorm" in float_ops["GroupNorm"]["reason"]
    assert "sub" in float_ops
    assert evaluate(teacher, test_set)["psnr"] - evaluate(int8, test_set)["psnr"] < 0.5
    assert "PerChannel" in report["weight_observer"]
    assert report["reduce_range"] is True  # x86 default: 7-bit activations, safe without VNNI


def test_int8_full_range_is_an_option(teacher, proxy):
    _, report = quantize_int8(teacher, proxy[:8], reduce_range=False)
    assert report["reduce_range"] is False


def test_packed_int8_file_round_trips_exactly_and_is_small(teacher, proxy, tmp_path):
    int8, _ = quantize_int8(teacher, proxy)
    meta = {"model": "unet", "width": 8, "in_channels": 1, "image_size": 16, "backend": "x86"}
    size = save_int8(tmp_path / "m.fcq8", int8, meta)
    loaded, header = load_int8(tmp_path / "m.fcq8")
    assert header["width"] == 8
    assert torch.equal(loaded(proxy), int8(proxy))
    assert size * 3.5 < count_parameters(teacher) * 4  # about a byte per weight, plus scales and names


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XXXX" + b[4:], "not a fedcompress int8 model"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "version"),
        (lambda b: b[: len(b) // 2], "corrupt"),
    ],
)
def test_packed_int8_file_refuses_bad_bytes(teacher, proxy, tmp_path, mutate, message):
    int8, _ = quantize_int8(teacher, proxy[:4])
    path = tmp_path / "m.fcq8"
    save_int8(path, int8, {"model": "unet", "width": 8, "in_channels": 1, "image_size": 16, "backend": "x86"})
    assert path.read_bytes()[:4] == MAGIC
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        load_int8(path)


# --- exports --------------------------------------------------------------------------------------------------
def test_torchscript_and_onnx_exports_reload_and_match(teacher, proxy, tmp_path):
    example, batch = proxy[:1], proxy[:5]
    _, diff = export.export_torchscript(teacher, example, tmp_path / "t.ts", batch)
    assert diff <= export.FP32_TOLERANCE
    assert torch.allclose(torch.jit.load(str(tmp_path / "t.ts"))(batch), teacher(batch), atol=1e-4)
    diff = export.export_onnx(teacher, example, tmp_path / "t.onnx", batch)
    assert diff <= export.FP32_TOLERANCE
    assert export.OnnxModule(tmp_path / "t.onnx")(batch).shape == (5, 1, 16, 16)  # batch axis is dynamic
    int8, _ = quantize_int8(teacher, proxy)
    _, diff = export.export_torchscript(int8, example, tmp_path / "q.ts", batch)
    assert diff <= 1e-6
    assert torch.equal(torch.jit.load(str(tmp_path / "q.ts"))(batch), int8(batch))


def test_check_close_refuses_a_large_difference():
    export.check_close("x", 1e-5, 1e-4)
    with pytest.raises(FedCompressError, match="differs"):
        export.check_close("x", 1e-3, 1e-4)
    with pytest.raises(FedCompressError):
        export.check_close("x", float("nan"), 1e-4)


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
