import math
import warnings

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn

import fedcompress.data as fd
from fedcompress import metrics
from fedcompress.models import build_model
from fedcompress.seeding import torch_generator
from fedcompress.training import apply_delta, evaluate, make_loader, make_optimizer, state_delta, train_epochs


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models gain nothing from threads, and on a busy shared machine two spinning threads cost 5x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def shard():
    return fd.client_data(0, 1, samples_per_client=128, image_size=16, non_iid=0.0, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return fd.test_data(64, image_size=16, seed=0, num_partitions=1, non_iid=0.0)


def test_loader_order_comes_from_the_generator_only(shard):
    def first_batch(seed):
        return next(iter(make_loader(shard, 8, torch_generator(seed))))[0]

    torch.manual_seed(123)  # the global RNG must not matter
    a = first_batch(1)
    torch.manual_seed(456)
    assert torch.equal(a, first_batch(1))
    assert not torch.equal(a, first_batch(2))
    assert sum(len(x) for x, _ in make_loader(shard, 50, torch_generator(0))) == len(shard)


def test_a_few_epochs_improve_psnr_on_phantoms(shard, held_out):
    torch.manual_seed(0)
    model = build_model("unet", 8)
    before = evaluate(model, held_out)
    assert before["psnr"] == pytest.approx(before["psnr_noisy"], abs=1e-6)  # the untrained model is the identity
    optimizer = make_optimizer(model, lr=0.1, momentum=0.9)
    loader = make_loader(shard, 16, torch_generator(0))
    first = train_epochs(model, loader, optimizer, 1)
    last = train_epochs(model, loader, optimizer, 5)
    after = evaluate(model, held_out)
    assert last < first
    assert after["psnr"] > before["psnr"] + 0.6
    assert after["ssim"] > before["ssim"]
    assert after["loss"] < before["loss"]


def test_evaluate_reports_the_metrics_and_restores_the_mode(held_out):
    model = build_model("dncnn", 4)
    model.train()
    result = evaluate(model, held_out, batch_size=10)
    assert set(result) == {"psnr", "ssim", "loss", "psnr_noisy"}
    assert model.training
    assert result["psnr_noisy"] == pytest.approx(metrics.psnr(held_out.noisy, held_out.clean))
    assert result["loss"] == pytest.approx(metrics.mse(held_out.noisy, held_out.clean))
    model.eval()
    evaluate(model, held_out)
    assert not model.training


@pytest.mark.filterwarnings("ignore")
def test_train_epochs_runs_on_opacus_wrapped_objects_and_counts_every_step(shard):
    torch.manual_seed(0)
    model = build_model("unet", 4)
    optimizer = make_optimizer(model, lr=0.05, momentum=0.9)
    engine = PrivacyEngine(accountant="prv")
    private, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=make_loader(shard, 32, torch_generator(0)),
        noise_multiplier=1.0,
        max_grad_norm=0.05,
        grad_sample_mode="hooks",
    )
    loss = train_epochs(private, dp_loader, dp_optimizer, 2)
    assert math.isfinite(loss) and loss > 0
    assert engine.accountant.history == [(1.0, 32 / 128, 2 * len(dp_loader))]
    assert engine.get_epsilon(1e-5) > 0

    # an empty Poisson batch still takes a DP step: noise is added and the accountant counts it
    before = [p.detach().clone() for p in model.parameters()]
    empty = [(torch.zeros(0, 1, 16, 16), torch.zeros(0, 1, 16, 16))]
    assert math.isnan(train_epochs(private, empty, dp_optimizer, 1))
    assert engine.accountant.history[-1][2] == 2 * len(dp_loader) + 1
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_plain_training_skips_empty_batches():
    model = build_model("dncnn", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    empty = [(torch.zeros(0, 1, 8, 8), torch.zeros(0, 1, 8, 8))]
    assert math.isnan(train_epochs(model, empty, make_optimizer(model, 0.1, 0.9), 2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _WithCounter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("steps", torch.tensor(7))


def test_state_delta_and_apply_delta_round_trip():
    old_model, new_model = _WithCounter(), _WithCounter()
    old, new = old_model.state_dict(), new_model.state_dict()
    delta = state_delta(new, old)
    assert set(delta) == {"linear.weight", "linear.bias"}  # the integer buffer is skipped
    assert all(d.dtype == torch.float32 for d in delta.values())
    rebuilt = apply_delta(old, delta)
    assert all(torch.allclose(rebuilt[k], new[k]) for k in delta)
    assert not torch.equal(old_model.linear.weight, new_model.linear.weight)  # the mapping was not changed


def test_apply_delta_updates_a_module_in_place_keeping_its_parameters():
    model = _WithCounter()
    weight = model.linear.weight
    original = weight.detach().clone()
    delta = {"linear.weight": np.ones((2, 3), dtype=np.float32), "linear.bias": torch.zeros(2)}
    assert apply_delta(model, delta, scale=0.5) is model
    assert model.linear.weight is weight
    torch.testing.assert_close(weight.detach(), original + 0.5)


def test_delta_helpers_refuse_mismatches():
    model = _WithCounter()
    state = model.state_dict()
    with pytest.raises(ValueError, match="different keys"):
        state_delta(state, {"linear.weight": state["linear.weight"]})
    other = dict(state, **{"linear.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="shape"):
        state_delta(other, state)
    with pytest.raises(ValueError, match="floating-point entries"):
        apply_delta(model, {"linear.weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="shape"):
        apply_delta(model, {"linear.weight": torch.zeros(3, 2), "linear.bias": torch.zeros(2)})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: make_loader(s, 0, torch_generator(0)), "batch_size"),
        (lambda s: evaluate(build_model("unet", 4), s, batch_size=0), "batch_size"),
        (lambda s: make_optimizer(build_model("unet", 4), 0.0, 0.9), "lr"),
        (lambda s: make_optimizer(build_model("unet", 4), 0.1, 1.0), "momentum"),
        (
            lambda s: train_epochs(build_model("unet", 4), [], torch.optim.SGD([torch.zeros(1)], lr=1), 0),
            "epochs",
        ),
    ],
)
def test_bad_arguments_raise(shard, call, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message):
            call(shard)
