"""The NumPy functions against the dense formulas; errors; dtypes and layouts; threads."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import dense
import supcon


def batch(seed, shape, dtype=np.float64, classes=4):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype), rng.integers(0, classes, shape[0])


def dense_value_and_grad(features, labels, **options):
    x = torch.tensor(features, dtype=torch.float64, requires_grad=True)
    y = None if labels is None else torch.tensor(labels)
    loss = dense.supcon(x, y, **options)
    loss.backward()
    return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("labelled", [True, False])
def test_supcon_matches_the_dense_formula(dtype, tolerance, views, labelled):
    features, labels = batch(views, (33, views, 16), dtype)
    labels = labels if labelled else None
    for options in [dict(temperature=0.1), dict(temperature=0.5, base_temperature=0.07)]:
        loss, grad, anchors = supcon.supcon_loss(features, labels, **options)
        want_loss, want_grad = dense_value_and_grad(features, labels, **options)
        assert grad.dtype == dtype and grad.shape == features.shape
        if views == 1 and not labelled:
            assert anchors == 0 and loss == 0.0 and not grad.any()
            continue
        assert abs(loss - want_loss) <= tolerance * abs(want_loss)
        assert np.abs(grad - want_grad).max() <= tolerance * np.abs(want_grad).max()


def test_two_dimensional_features_are_one_view_each():
    features, labels = batch(7, (20, 8))
    loss, grad, anchors = supcon.supcon_loss(features, labels)
    loss3, grad3, anchors3 = supcon.supcon_loss(features[:, None, :], labels)
    assert (loss, anchors) == (loss3, anchors3)
    assert grad.shape == (20, 8) and np.array_equal(grad, grad3[:, 0, :])


def test_any_layout_is_read_in_place():
    features, labels = batch(3, (8, 2, 12))
    strided = np.ascontiguousarray(features.transpose(2, 1, 0)).transpose(2, 1, 0)
    assert not strided.flags.c_contiguous
    assert supcon.supcon_loss(strided, labels)[0] == supcon.supcon_loss(features, labels)[0]


def test_the_shares_of_the_anchors_add_up_to_the_loss():
    features, labels = batch(11, (30, 2, 8))
    loss, grad, _ = supcon.supcon_loss(features, labels)
    shares = [supcon.supcon_loss(features, labels, anchors=(a, b)) for a, b in [(0, 12), (12, 30)]]
    assert abs(sum(s[0] for s in shares) - loss) < 1e-12
    assert np.abs(sum(s[1] for s in shares) - grad).max() < 1e-12


def test_infonce_matches_moco_cross_entropy():
    rng = np.random.default_rng(5)
    q, k, n = (rng.standard_normal(s) for s in [(10, 8), (10, 8), (50, 8)])
    loss, grad = supcon.infonce(q, k, n, temperature=0.2)
    x = torch.tensor(q, requires_grad=True)
    want = dense.infonce(x, torch.tensor(k), torch.tensor(n), temperature=0.2)
    want.backward()
    assert abs(loss - want.item()) < 1e-10 and np.abs(grad - x.grad.numpy()).max() < 1e-10


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f, l: supcon.supcon_loss(f[0, 0], l), "features: expected [batch, dim] or [batch, views, dim]"),
        (lambda f, l: supcon.supcon_loss(f, l[:-1]), "labels"),
        (lambda f, l: supcon.supcon_loss(np.where(np.arange(f.size).reshape(f.shape) == 7, np.nan, f), l), "NaN"),
        (lambda f, l: supcon.supcon_loss(np.zeros_like(f), l), "zero"),
        (lambda f, l: supcon.supcon_loss(f.astype(np.int64), l), "float32 or float64"),
        (lambda f, l: supcon.supcon_loss(f, l.astype(np.float32)), "labels: expected a 1-D int64 or int32"),
        (lambda f, l: supcon.supcon_loss(f, l, temperature=0.0), "temperature"),
        (lambda f, l: supcon.supcon_loss(f, l, variant="sideways"), "variant"),
        (lambda f, l: supcon.supcon_loss(f, l, queue=f[:, 0, :]), "queue and queue_labels"),
        (lambda f, l: supcon.supcon_loss(f, l, anchors=(3, 99)), "99"),
    ],
)
def test_bad_inputs_raise_a_clear_supcon_error(call, message):
    features, labels = batch(1, (6, 2, 4))
    with pytest.raises(supcon.SupConError, match=None) as caught:
        call(features, labels)
    assert isinstance(caught.value, ValueError)
    assert message.lower() in str(caught.value).lower(), str(caught.value)


def test_threads_calling_at_once_get_the_serial_results():
    problems = [batch(seed, (64, 2, 32), np.float32) for seed in range(16)]
    serial = [supcon.supcon_loss(f, l) for f, l in problems]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda p: supcon.supcon_loss(*p), problems))
    for (a, ga, _), (b, gb, _) in zip(serial, parallel):
        assert a == b and np.array_equal(ga, gb)


def test_the_version_is_the_crates():
    from importlib.metadata import version

    assert supcon.__version__ == version("supcon")
