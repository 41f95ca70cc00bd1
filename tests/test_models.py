import warnings

import pytest
import torch
from opacus import PrivacyEngine
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, TensorDataset

import fedcompress.models as fm
from fedcompress.models import MODEL_NAMES, build_model, count_parameters, model_from_state


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models gain nothing from threads, and on a busy shared machine two spinning threads cost 5x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_counts_grow_with_width_and_students_are_ten_times_smaller(name):
    counts = {w: count_parameters(build_model(name, w)) for w in (4, 8, 16, 32)}
    assert counts[4] < counts[8] < counts[16] < counts[32]
    assert counts[16] >= 10 * counts[4]


def test_unet_sizes_match_the_design():
    assert 200_000 <= count_parameters(build_model("unet", 32)) <= 600_000  # a few hundred thousand
    assert count_parameters(build_model("unet", 16)) == 109_713  # a change of architecture shows up here


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [8, 17, 32])
def test_output_has_the_input_shape_and_an_untrained_model_is_the_identity(name, size):
    x = torch.rand(3, 1, size, size)
    model = build_model(name, 4)
    out = model(x)
    assert out.shape == x.shape
    if name != "plain":  # its ReLU stack needs a non-zero head to learn (fedcompress.models.plain)
        torch.testing.assert_close(out, x)  # zero-initialised last layer: residual denoisers start as identity


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_are_opacus_safe(name):
    model = build_model(name, 8)
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dp_sgd_hooks_per_sample_gradients_match_a_loop(name):
    torch.manual_seed(0)
    model = build_model(name, 4)
    for p in model.parameters():  # leave the zero init so every layer gets a gradient
        torch.nn.init.normal_(p, std=0.1)
    x, y = torch.rand(4, 1, 12, 12), torch.rand(4, 1, 12, 12)
    expected = []
    for i in range(4):
        model.zero_grad()
        torch.nn.functional.mse_loss(model(x[i : i + 1]), y[i : i + 1]).backward()
        expected.append([p.grad.clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private, optimizer, loader = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=False,
            grad_sample_mode="hooks",
        )
    # the training loss: mean over batch and pixels; Opacus (loss_reduction="mean") undoes the 1/batch
    torch.nn.functional.mse_loss(private(x), y).backward()
    for j, p in enumerate(model.parameters()):
        assert p.grad_sample is not None and p.grad_sample.shape == (4, *p.shape)
        for i in range(4):
            torch.testing.assert_close(p.grad_sample[i], expected[i][j], rtol=1e-4, atol=1e-6)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_from_state_round_trips(name):
    model = build_model(name, 4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    state = {k: v.numpy() for k, v in model.state_dict().items()}  # arrays work too
    copy = model_from_state(name, 4, state)
    for (k, a), b in zip(model.state_dict().items(), copy.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_model_from_state_names_what_does_not_fit():
    state = build_model("unet", 4).state_dict()
    with pytest.raises(ValueError, match="wrong shapes") as info:
        model_from_state("unet", 8, state)
    assert "enc1.0.weight: (4, 1, 3, 3) vs (8, 1, 3, 3)" in str(info.value)
    with pytest.raises(ValueError, match=r"missing \[.*unexpected \[body"):
        model_from_state("unet", 4, build_model("dncnn", 4).state_dict())
    wrapped = {f"_module.{k}": v for k, v in state.items()}
    with pytest.raises(ValueError, match="_module"):
        model_from_state("unet", 4, wrapped)


@pytest.mark.parametrize(("name", "width"), [("resnet", 16), ("unet", 0), ("dncnn", 2.5)])
def test_bad_model_arguments_raise(name, width):
    with pytest.raises(ValueError, match="name" if name == "resnet" else "width"):
        build_model(name, width)


def test_public_names_import():
    assert all(getattr(fm, name) is not None for name in fm.__all__)
    assert set(MODEL_NAMES) == {"unet", "dncnn", "plain"}
