"""Two gloo processes with DDP and SupConLoss(distributed=True) give one process's loss and
gradients."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from supcon.torch import SupConLoss

BATCH, VIEWS, DIM = 24, 2, 12


def data():
    generator = torch.Generator().manual_seed(7)
    images = torch.randn(BATCH, VIEWS, DIM, generator=generator, dtype=torch.float64)
    return images, torch.randint(0, 4, (BATCH,), generator=generator)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(DIM, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).double()


def one_step(net, images, labels, criterion):
    loss = criterion(net(images), labels)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in net.parameters()]


def rank_main(rank, world, init_file, out_dir, parts):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    images, labels = data()
    start, stop = parts[rank]
    net = DistributedDataParallel(model())
    loss, grads = one_step(net, images[start:stop], labels[start:stop], SupConLoss(distributed=True))
    torch.save((loss, grads), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_ranks_with_ddp_equal_one_process():
    images, labels = data()
    want_loss, want_grads = one_step(model(), images, labels, SupConLoss())
    # Unequal shares (a short last batch) on purpose.
    parts = [(0, 14), (14, BATCH)]
    with tempfile.TemporaryDirectory() as out_dir:
        init_file = os.path.join(out_dir, "init")
        mp.spawn(rank_main, args=(2, init_file, out_dir, parts), nprocs=2, join=True)
        for rank in range(2):
            loss, grads = torch.load(os.path.join(out_dir, f"rank{rank}.pt"))
            assert abs(loss - want_loss) < 1e-12 * abs(want_loss)
            for got, want in zip(grads, want_grads):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
