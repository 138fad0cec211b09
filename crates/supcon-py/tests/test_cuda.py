"""supcon.torch's CUDA path: CUDA tensors to the fused kernels in place. Without a GPU only the
build and the error are tested; with one (``torch.cuda.is_available()``), values and gradients
against the CPU loss and the dense formula, autograd through a model, dtypes, streams and bad
inputs."""

import pytest
import torch

import dense
from supcon import _native
from supcon.torch import SupConError, SupConLoss

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_the_cuda_kernels_are_compiled_in_by_default():
    assert _native.CUDA is True


def test_the_cuda_entry_point_raises_a_clear_error_before_touching_memory():
    # Without a driver or device: CUDA unavailable; with one: the null addresses are refused.
    with pytest.raises(SupConError, match="CUDA|NVRTC|libcuda|null pointer"):
        _native._supcon_loss_cuda(0, (4, 2, 8), 0, 0, None)


def batch(seed, shape, device, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    labels = torch.randint(0, 5, shape[:1], generator=generator)
    return x.to(device), labels.to(device)


def value_and_grad(loss_fn, x, *args):
    x = x.clone().requires_grad_()
    loss = loss_fn(x, *args)
    loss.backward()
    return loss.detach(), x.grad


@needs_gpu
@pytest.mark.parametrize("shape", [(64, 2, 32), (100, 16), (300, 2, 128)])
@pytest.mark.parametrize("with_labels", [True, False])
def test_cuda_matches_the_cpu_loss_and_the_dense_formula(shape, with_labels):
    if not with_labels and len(shape) == 2:
        pytest.skip("SimCLR needs two views")
    x, labels = batch(1, shape, "cuda")
    labels = labels if with_labels else None
    loss_fn = SupConLoss(temperature=0.1)
    gpu = value_and_grad(loss_fn, x, labels)
    cpu = value_and_grad(loss_fn, x.cpu(), None if labels is None else labels.cpu())
    assert gpu[0].device.type == "cuda" and gpu[1].device.type == "cuda"
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-3, atol=1e-4 * cpu[1].abs().max().item())
    f = x.cpu().double()
    reference = dense.supcon(f if f.dim() == 3 else f.unsqueeze(1), None if labels is None else labels.cpu())
    torch.testing.assert_close(gpu[0].cpu().double(), reference, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_float64_cuda_features_keep_their_dtype():
    x, labels = batch(2, (32, 2, 16), "cuda", torch.float64)
    loss, grad = value_and_grad(SupConLoss(), x, labels)
    assert loss.dtype == torch.float64 and grad.dtype == torch.float64
    expected = value_and_grad(SupConLoss(), x.cpu(), labels.cpu())
    torch.testing.assert_close(loss.cpu(), expected[0], rtol=1e-5, atol=1e-6)


@needs_gpu
def test_a_model_on_the_gpu_trains_as_on_the_cpu():
    torch.manual_seed(0)
    model = torch.nn.Linear(20, 8).double()
    x, labels = batch(3, (40, 20), "cpu", torch.float64)
    weights = []
    for device in ["cpu", "cuda"]:
        m = torch.nn.Linear(20, 8).to(device)
        m.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            SupConLoss()(m(x.float().to(device)), labels.to(device)).backward()
            opt.step()
        weights.append(m.weight.detach().cpu())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)


@needs_gpu
def test_work_on_another_stream_is_finished_before_the_kernels_read_it():
    x, labels = batch(4, (256, 2, 64), "cuda")
    expected = SupConLoss()(x, labels)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        y = x * 1.0  # queued on the side stream
        got = SupConLoss()(y, labels)
    torch.testing.assert_close(got, expected)


@needs_gpu
def test_bad_cuda_inputs_raise_naming_what():
    x, labels = batch(5, (16, 2, 8), "cuda")
    x[3, 1, 2] = float("nan")
    with pytest.raises(SupConError, match=r"index \(3, 1, 2\)"):
        SupConLoss()(x, labels)
    x, labels = batch(5, (16, 2, 8), "cuda")
    x[7, 0] = 0.0
    with pytest.raises(SupConError, match=r"row \(7, 0\) is zero"):
        SupConLoss()(x, labels)
    with pytest.raises(SupConError, match="labels"):
        SupConLoss()(x, labels[:5])
