"""Two processes equal one: N training steps of DistributedDataParallel on 2 CPU processes
(gloo) × batch b give the weights that 1 process × batch 2b gives, for every method (and the
warm start), on a ViT whose LayerNorm does not couple the images of a batch.

Why it holds: DDP averages the gradients of the two ranks, and with equal per-rank batches the
mean of the two per-rank mean losses is the mean loss of the whole batch. Every conditioning
is per image (precond per row, tokens per image) or fixed (spectral's correction), and the warm
start counts training forwards, the same on every rank. Families whose normalisation couples
the batch do not have this property: XCiT's patch embedding and LPI use BatchNorm (on CPU
plain BN: each rank normalises its own b images, so 2 × b differs from 2b; SyncBN on GPUs
would restore it), and the detection forms' pyramid uses BN too."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cond_helpers import BACKBONES, build

METHODS = {
    'off': None,
    'precond': dict(precond=dict()),
    'spectral': dict(spectral=dict(lam=1.)),
    'svd': dict(spectral=dict(mode='svd')),
    'tokens': dict(tokens=dict()),
    'warm': dict(precond=dict(), spectral=dict(lam=1.), tokens=dict(), warm_start=dict(iters=2)),
}
STEPS, BATCH = 3, 2  # per rank


class Classifier(torch.nn.Module):
    """A tiny conditioned ViT and a linear head: logits (B, 3) of images (B, 3, 32, 32)."""

    def __init__(self, conditioning):
        super().__init__()
        import mmcondattn.openmmlab  # noqa: F401  (in the spawned processes too)
        torch.manual_seed(0)
        self.backbone = build('mmpretrain',
                              dict(BACKBONES['vit'], drop_path_rate=0., conditioning=conditioning))
        self.backbone.init_weights()
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, 2 * BATCH, 3, 32, 32, generator=g)
    y = torch.randint(0, 3, (STEPS, 2 * BATCH), generator=g)
    return x, y


def _train(model, x, y):
    """STEPS SGD steps, one per batch of ``x`` (STEPS, B, 3, 32, 32), ``y`` (STEPS, B)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for xs, ys in zip(x, y):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()


def _worker(rank, port, conditioning, out):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    model = Classifier(conditioning).train()
    x, y = _data()
    part = slice(rank * BATCH, (rank + 1) * BATCH)
    _train(torch.nn.parallel.DistributedDataParallel(model), x[:, part], y[:, part])
    if rank == 0:
        torch.save(model.state_dict(), out)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.parametrize('method', list(METHODS))
def test_two_processes_equal_one(method, tmp_path):
    out = str(tmp_path / 'rank0.pth')
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    mp.spawn(_worker, args=(_free_port(), METHODS[method], out), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    model = Classifier(METHODS[method]).train()
    _train(model, *_data())
    one = model.state_dict()
    assert set(one) == set(two)
    for k in one:
        if one[k].is_floating_point():
            torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(two[k], one[k]), k  # the record, the warm start's step
