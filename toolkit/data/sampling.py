"""Two-domain batches: the images of training iteration t as a pure function of (seed, t, rank)."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from toolkit.errors import DataError

Key = tuple[int, int, int]

# Augmentation seeds are drawn below 2**62 so that they fit torch's int64 and Generator.manual_seed.
_MAX_ITEM_SEED = 2**62


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2 or batch_size % 2:
        raise DataError(
            f"batch_size must be an even integer of at least 2 (half from each of two domains), got {batch_size!r}"
        )


class DomainPairBatchSampler(Sampler[list[Key]]):
    """Batch sampler that pairs two different domains in every batch.

    Batch ``t`` is drawn from a generator seeded with ``seed * 1_000_003 + t`` (see
    :meth:`generator_seed` for the other ranks of a multi-process run). It picks
    an ordered pair of different domains, uniform over the K * (K - 1) pairs. It then
    draws ``batch_size / 2`` distinct image indices from each domain (with replacement
    only for a domain with fewer images) and one augmentation seed per image. The first half of the batch comes from
    the first domain and the second half from the second. Each key is
    ``(domain, index, seed)`` for :class:`~toolkit.data.folders.DomainImageDataset`.

    Iteration yields batches ``start_iteration, start_iteration + 1, ...`` and stops
    before batch ``iterations`` (the schedule's total, so a run resumed at ``t`` yields
    ``iterations - t`` batches); it is infinite when ``iterations`` is None.

    In a run of ``world_size`` processes, process ``rank`` draws its own batch at every
    iteration, so one iteration trains on ``world_size * batch_size`` images. Rank 0 draws the
    batches of a single-process run with the same seed.
    """

    def __init__(
        self,
        domain_sizes: Sequence[int],
        batch_size: int,
        seed: int,
        start_iteration: int = 0,
        iterations: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_batch_size(batch_size)
        if len(domain_sizes) < 2:
            raise DataError(f"batches pair two domains, but the data have {len(domain_sizes)} domain(s)")
        if min(domain_sizes) < 1:
            raise DataError(f"every domain needs at least one image, got domain sizes {list(domain_sizes)}")
        if start_iteration < 0:
            raise DataError(f"start_iteration must be at least 0, got {start_iteration}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(
                f"rank must be in 0..world_size-1 and world_size at least 1, got rank {rank} of world_size {world_size}"
            )
        self.domain_sizes = list(domain_sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.start_iteration = start_iteration
        self.iterations = iterations
        self.rank = rank
        self.world_size = world_size

    def generator_seed(self, iteration: int) -> int:
        """Return the seed of the generator that draws batch ``iteration`` of this rank, in [0, 2**64).

        Rank 0 keeps the single-process formula ``seed * 1_000_003 + iteration``. Other
        ranks hash ``(seed, iteration, rank)`` with BLAKE2b, so their batches are
        independent of rank 0's and of each other's.
        """
        if self.rank == 0:
            # Python ints do not overflow, so fold the combined seed into manual_seed's unsigned 64-bit range.
            return (self.seed * 1_000_003 + iteration) % 2**64
        digest = hashlib.blake2b(f"{self.seed}:{iteration}:{self.rank}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def batch(self, iteration: int) -> list[Key]:
        """Return the keys of batch ``iteration``: the first half from one domain, the second from another."""
        generator = torch.Generator().manual_seed(self.generator_seed(iteration))
        num_domains = len(self.domain_sizes)
        first = int(torch.randint(num_domains, (1,), generator=generator))
        second = int(torch.randint(num_domains - 1, (1,), generator=generator))
        if second >= first:
            second += 1

        half = self.batch_size // 2
        keys = []
        for domain in (first, second):
            size = self.domain_sizes[domain]
            if half <= size:
                indices = torch.randperm(size, generator=generator)[:half]
            else:
                indices = torch.randint(size, (half,), generator=generator)
            seeds = torch.randint(_MAX_ITEM_SEED, (half,), generator=generator)
            keys += [(domain, int(index), int(item_seed)) for index, item_seed in zip(indices, seeds)]
        return keys

    def __iter__(self) -> Iterator[list[Key]]:
        iteration = self.start_iteration
        while self.iterations is None or iteration < self.iterations:
            yield self.batch(iteration)
            iteration += 1

    def __len__(self) -> int:
        if self.iterations is None:
            raise TypeError("an endless DomainPairBatchSampler (iterations=None) has no length")
        return max(0, self.iterations - self.start_iteration)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    start_iteration: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    iterations: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Build a DataLoader of two-domain batches ``(images (2n, 3, H, W), labels (2n,) int64)``.

    ``dataset`` needs ``domain_sizes`` and keys ``(domain, index, seed)``, like
    :class:`~toolkit.data.folders.DomainImageDataset`. The loader has its own generator,
    so creating and iterating it leaves the global torch RNG untouched. ``rank`` and
    ``world_size`` select the batches of one process of a multi-process run.
    """
    sampler = DomainPairBatchSampler(
        dataset.domain_sizes,
        batch_size,
        seed,
        start_iteration=start_iteration,
        iterations=iterations,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed % 2**64),
        worker_init_fn=_ignore_interrupts if num_workers > 0 else None,
    )


def _ignore_interrupts(worker_id: int) -> None:
    # Ctrl-C reaches every process of the terminal's group. Only the main process
    # reacts: it finishes its iteration and writes a checkpoint. A worker that died on
    # the signal would make the DataLoader raise before that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def iterations_per_epoch(domain_sizes: Sequence[int], batch_size: int) -> int:
    """Return the iterations of one epoch: the largest domain's size over ``batch_size / 2``, at least 1.

    ``batch_size / 2`` is the number of images a batch takes from each of its two domains.
    """
    _check_batch_size(batch_size)
    return max(1, max(domain_sizes) // (batch_size // 2))
