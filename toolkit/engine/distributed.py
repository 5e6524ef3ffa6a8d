"""Several training processes under torchrun: the process group, each rank's device and the collectives the engine uses.

torchrun (``python -m torch.distributed.run``) starts one process per GPU, or several
on CPUs, and passes each its place in the environment: ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``. When ``WORLD_SIZE`` is unset or 1, :func:`setup` creates no process
group and every other function here returns the single-process result at once.

The networks are not wrapped in ``DistributedDataParallel``. Its reducer expects one
forward and one backward per module and step, and it averages gradients from hooks on
``AccumulateGrad``. One training iteration here runs the generator three times, back-propagates
three losses into overlapping parameter sets, and takes the G-alone gradients with
``torch.autograd.grad``, which fires no ``AccumulateGrad`` hook, so DDP would leave those
gradients unsynchronised. Instead the trainer calls :func:`average_parameter_gradients`
or :func:`average_gradients` before every optimizer step. Each call flattens the
gradients of the stepped networks into one buffer and runs one all-reduce, then
divides by the world size. That is the average DDP computes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from toolkit.errors import ToolkitError

log = logging.getLogger(__name__)

T = TypeVar("T")


# What torchrun sets in the environment. These work before the process group exists.


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ToolkitError(
            f"environment variable {name}={value!r} is not an integer; torchrun sets it, so unset it "
            "when running without torchrun"
        ) from None


def launched_world_size() -> int:
    """Return the number of processes torchrun started (``WORLD_SIZE``, 1 without torchrun)."""
    return _environment_int("WORLD_SIZE", 1)


def launched_rank() -> int:
    """Return this process's global rank from ``RANK`` (0 without torchrun)."""
    return _environment_int("RANK", 0)


def local_rank() -> int:
    """Return this process's rank on its node from ``LOCAL_RANK`` (0 without torchrun)."""
    return _environment_int("LOCAL_RANK", 0)


# The process group.


def is_distributed() -> bool:
    """Return True when this process belongs to a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Return True on rank 0, the process that writes the run folder (always True in a single process)."""
    return rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """Return the device this rank trains on: ``cuda:LOCAL_RANK`` for a CUDA ``device`` under torchrun.

    Outside torchrun, and for the CPU, ``device`` comes back unchanged. An explicit
    ``cuda:N`` is an error under torchrun, because every process would pick the same GPU.
    """
    if launched_world_size() <= 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise ToolkitError(
            f"device '{device}' names one GPU, but torchrun started {launched_world_size()} processes and each "
            "needs its own; pass --device cuda (or auto) so that each process takes cuda:LOCAL_RANK, and choose "
            "the GPUs with CUDA_VISIBLE_DEVICES"
        )
    index = local_rank()
    count = torch.cuda.device_count()
    if index >= count:
        raise ToolkitError(
            f"process with LOCAL_RANK {index} has no GPU: {count} CUDA device(s) visible; "
            f"start at most {count} processes per node (torchrun --nproc-per-node {count})"
        )
    return torch.device("cuda", index)


def setup(device: torch.device) -> torch.device:
    """Join torchrun's process group and return this rank's device, or return ``device`` without torchrun.

    The backend is NCCL for CUDA devices and gloo for the CPU. The rendezvous address
    comes from the environment torchrun sets (``init_method="env://"``). Calling it
    again in the same process returns the device and changes nothing.
    """
    if launched_world_size() <= 1:
        return device
    if not dist.is_available():
        raise ToolkitError(
            f"torchrun started {launched_world_size()} processes, but this PyTorch {torch.__version__} build "
            "has no torch.distributed support; install a build with it or run a single process"
        )
    device = rank_device(device)
    if dist.is_initialized():
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    log.info(
        "joined a process group of %d ranks as rank %d (%s backend, device %s)",
        dist.get_world_size(),
        dist.get_rank(),
        dist.get_backend(),
        device,
    )
    return device


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank reaches this call."""
    if is_distributed():
        dist.barrier()


def _communication_device() -> torch.device:
    # NCCL moves only CUDA tensors, and gloo takes CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# Collectives on tensors.


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``, in place."""
    if is_distributed():
        _broadcast_tensors([*module.parameters(), *module.buffers()])


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (running statistics, say) into every rank's ``module``, in place."""
    if is_distributed():
        _broadcast_tensors(list(module.buffers()))


def _broadcast_tensors(tensors: list[Tensor]) -> None:
    """Broadcast ``tensors`` from rank 0, one flat buffer per dtype and device."""
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    target = _communication_device()
    with torch.no_grad():
        for group in groups.values():
            flat = torch.cat([tensor.detach().reshape(-1) for tensor in group]).to(target)
            dist.broadcast(flat, src=0)
            for tensor, piece in zip(group, flat.split([tensor.numel() for tensor in group])):
                tensor.copy_(piece.view_as(tensor))


def average_gradients(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> list[Tensor | None]:
    """Average ``grads`` (one per tensor of ``params``, None where a tensor has none) over all ranks.

    All gradients travel in one flat buffer and one all-reduce, together with one count
    per tensor of the ranks that had a gradient for it. A gradient missing on some ranks
    counts as zeros there, as in ``DistributedDataParallel`` with unused parameters. A
    gradient missing on every rank stays None. In a single process the list comes back
    unchanged.
    """
    grads = list(grads)
    if not is_distributed():
        return grads
    if len(params) != len(grads):
        raise ValueError(f"average_gradients got {len(params)} tensors but {len(grads)} gradients")
    if not params:
        return grads

    target = _communication_device()
    dtype = functools.reduce(torch.promote_types, [param.dtype for param in params])
    pieces = [
        (grad if grad is not None else torch.zeros_like(param)).reshape(-1).to(target, dtype)
        for param, grad in zip(params, grads)
    ]
    present = torch.tensor([grad is not None for grad in grads], dtype=dtype, device=target)
    flat = torch.cat([*pieces, present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)

    sizes = [param.numel() for param in params]
    *summed, counts = flat.split([*sizes, len(params)])
    averaged: list[Tensor | None] = []
    for param, total, count in zip(params, summed, counts.tolist()):
        if count == 0:
            averaged.append(None)
        else:
            # empty_like keeps the parameter's strides, so a channels-last weight gets a channels-last gradient.
            mean = total.div_(dist.get_world_size()).view(param.shape)
            averaged.append(torch.empty_like(param).copy_(mean))
    return averaged


def average_parameter_gradients(params: Sequence[nn.Parameter]) -> None:
    """Replace each parameter's ``.grad`` with its average over all ranks (see :func:`average_gradients`)."""
    if not is_distributed():
        return
    for param, grad in zip(params, average_gradients(params, [param.grad for param in params])):
        param.grad = grad


def average_values(values: Tensor) -> Tensor:
    """Return the element-wise mean of ``values`` over all ranks (``values`` itself in a single process)."""
    if not is_distributed():
        return values
    device = values.device
    total = values.detach().to(_communication_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.div_(dist.get_world_size()).to(device)


def all_ranks(flag: bool) -> bool:
    """Return True when ``flag`` is True on every rank."""
    return _reduce_flag(flag, dist.ReduceOp.MIN) if is_distributed() else flag


def any_rank(flag: bool) -> bool:
    """Return True when ``flag`` is True on at least one rank."""
    return _reduce_flag(flag, dist.ReduceOp.MAX) if is_distributed() else flag


def _reduce_flag(flag: bool, op: dist.ReduceOp) -> bool:
    value = torch.tensor([int(flag)], dtype=torch.int32, device=_communication_device())
    dist.all_reduce(value, op=op)
    return bool(value.item())


def check_replicas_equal(module: nn.Module, iteration: int) -> None:
    """Raise ToolkitError on every rank if ``module``'s parameters differ between ranks.

    Each rank reduces each parameter tensor to its sum and its sum of squares in float64,
    and every rank compares all ranks' figures. Identical tensors give identical figures,
    and tensors that differ almost never match in both.
    """
    if not is_distributed():
        return
    names = [name for name, _ in module.named_parameters()]
    target = _communication_device()
    with torch.no_grad():
        figures = torch.stack(
            [torch.stack([param.double().sum(), param.double().square().sum()]) for param in module.parameters()]
        ).to(target)
    gathered = [torch.empty_like(figures) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, figures)
    reference = gathered[0]
    for other_rank, other in enumerate(gathered[1:], start=1):
        # NaN figures on both ranks count as equal.
        unequal = (other != reference) & ~(other.isnan() & reference.isnan())
        differing = unequal.any(dim=1).nonzero().flatten().tolist()
        if differing:
            first_names = ", ".join(names[index] for index in differing[:3])
            raise ToolkitError(
                f"parameters differ between rank 0 and rank {other_rank} at iteration {iteration} in "
                f"{len(differing)} tensor(s), first {first_names}; every rank should apply the same averaged "
                "update, so a component changes weights outside the optimizer step or depends on the rank"
            )


# Collectives on Python objects.


def gather_objects(value: Any) -> list[Any] | None:
    """Collect one picklable ``value`` from every rank; rank 0 gets the list by rank, the others None."""
    if not is_distributed():
        return [value]
    gathered: list[Any] | None = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def share_from_main(function: Callable[[], T]) -> T:
    """Run ``function`` on rank 0 only and return its result on every rank.

    Use it for a decision that must be the same everywhere, such as claiming the run
    folder. If ``function`` raises on rank 0, every rank raises, so no rank waits for a
    result that never comes. A ToolkitError arrives with its own class and message, and
    any other exception as a ToolkitError that names it.
    """
    if not is_distributed():
        return function()
    return _run_on_main(function)


def main_first(function: Callable[[], T]) -> T:
    """Run ``function`` on rank 0, then, once it succeeded, on every other rank; return each rank's result.

    Use it where the first call fills a cache the others read, such as a dataset
    download. If ``function`` raises on rank 0, the other ranks raise without running it.
    """
    if not is_distributed():
        return function()
    if is_main():
        return _run_on_main(function)
    _run_on_main(function)
    return function()


def _run_on_main(function: Callable[[], T]) -> T:
    """Run ``function`` on rank 0 and broadcast its outcome; return the result everywhere or raise everywhere."""
    outcome: list[Any] = [None]
    if is_main():
        try:
            result = function()
        except ToolkitError as error:
            outcome = [("error", error)]
        except BaseException as error:
            outcome = [("failed", f"{type(error).__name__}: {error}")]
            dist.broadcast_object_list(outcome, src=0)
            raise
        else:
            outcome = [("ok", result)]
    dist.broadcast_object_list(outcome, src=0)

    status, payload = outcome[0]
    if status == "ok":
        return payload
    if status == "error":
        raise payload
    raise ToolkitError(f"rank 0 failed ({payload}); rank 0's stderr shows the traceback")


def seed_for_rank(seed: int, *parts: int | str) -> int:
    """Return a seed in [0, 2**63) derived from ``seed`` and ``parts`` (a rank, an iteration) by BLAKE2b."""
    text = ":".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1

