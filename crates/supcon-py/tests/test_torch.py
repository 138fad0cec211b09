"""supcon.torch against pytorch-metric-learning and the dense formula: values, gradients,
gradcheck, training, dtypes and errors."""

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

import dense
from supcon.torch import NTXentLoss, SupConError, SupConLoss


def embeddings(seed, shape, dtype):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype), torch.randint(0, 5, shape[:1], generator=generator)


def value_and_grad(loss_fn, x, *args):
    x = x.clone().requires_grad_()
    loss = loss_fn(x, *args)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_supcon_matches_pytorch_metric_learning(dtype, tolerance, temperature):
    for seed in range(5):
        x, labels = embeddings(seed, (48, 24), dtype)
        ours = value_and_grad(SupConLoss(temperature=temperature), x, labels)
        theirs = value_and_grad(pml.SupConLoss(temperature=temperature), x, labels)
        assert ours[0].dtype == dtype
        torch.testing.assert_close(ours[0], theirs[0], rtol=tolerance, atol=tolerance)
        torch.testing.assert_close(ours[1], theirs[1], rtol=tolerance, atol=tolerance * ours[1].abs().max().item())


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_ntxent_matches_pytorch_metric_learning_on_pairs(dtype, tolerance):
    x, _ = embeddings(3, (32, 2, 16), dtype)
    ours = value_and_grad(NTXentLoss(temperature=0.5), x)
    # pytorch-metric-learning's form: the rows with the index of their image as the label.
    rows = lambda v: torch.cat(torch.unbind(v, dim=1))
    pairs = torch.arange(32).repeat(2)
    theirs = value_and_grad(lambda v: pml.NTXentLoss(temperature=0.5)(rows(v), pairs), x)
    torch.testing.assert_close(ours[0], theirs[0], rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(ours[1], theirs[1], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.5, base_temperature=0.07)])
def test_supcon_matches_the_dense_supcontrast_formula_with_views(options):
    x, labels = embeddings(9, (40, 3, 16), torch.float64)
    ours = value_and_grad(SupConLoss(**options), x, labels)
    want = value_and_grad(lambda v, y: dense.supcon(v, y, **options), x, labels)
    torch.testing.assert_close(ours[0], want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours[1], want[1], rtol=1e-10, atol=1e-12)


def test_gradcheck_in_float64():
    x, labels = embeddings(1, (10, 2, 6), torch.float64)
    criterion = SupConLoss(temperature=0.3)
    assert torch.autograd.gradcheck(lambda v: criterion(v, labels), (x.requires_grad_(),))


def test_training_with_the_module_gives_the_dense_formulas_weights():
    x, labels = embeddings(4, (64, 20), torch.float64)

    def train(loss_fn):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)).double()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(5):
            optimizer.zero_grad()
            loss_fn(model(x).view(32, 2, 16), labels[:32]).backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    ours = train(SupConLoss(temperature=0.1))
    theirs = train(lambda v, y: dense.supcon(v, y, temperature=0.1))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_half_precision_keeps_its_dtype_and_anchors_without_positives_are_left_out():
    x = F.normalize(torch.randn(8, 4), dim=-1).to(torch.bfloat16).requires_grad_()
    loss = SupConLoss()(x, torch.tensor([0, 0, 1, 2, 3, 4, 5, 6]))
    loss.backward()
    assert loss.dtype == torch.bfloat16 and torch.isfinite(loss) and x.grad.dtype == torch.bfloat16
    # No anchor has a positive: the loss is 0, not NaN.
    alone = SupConLoss()(torch.randn(5, 4, requires_grad=True), torch.arange(5))
    assert alone.item() == 0.0


def test_bad_inputs_raise_supcon_errors():
    with pytest.raises(SupConError, match="meta tensor"):
        SupConLoss()(torch.empty(4, 2, 3, device="meta"), torch.arange(4))
    with pytest.raises(SupConError, match="labels length"):
        SupConLoss()(torch.randn(4, 2, 3), torch.arange(3))
    with pytest.raises(SupConError, match="NaN"):
        SupConLoss()(torch.full((4, 2, 3), float("nan")), torch.arange(4))
    with pytest.raises(SupConError, match="zero L2 norm"):
        SupConLoss()(torch.zeros(4, 2, 3), torch.arange(4))
    with pytest.raises(SupConError, match="integer tensor"):
        SupConLoss()(torch.randn(4, 2, 3), torch.rand(4))
    with pytest.raises(SupConError, match="init_process_group"):
        SupConLoss(distributed=True)(torch.randn(4, 2, 3), torch.arange(4))
    assert issubclass(SupConError, ValueError)
