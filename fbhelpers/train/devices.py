"""Where a run computes: the device (``resolve_device``), bf16 autocast, the torchrun environment and process
group, and the module a step calls (DistributedDataParallel under torchrun, compiled on request)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; anything else as given. ValueError
    for a name torch does not know, or a CUDA device where torch sees none."""
    if str(device) == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {str(device)!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available here (use 'cpu' or 'auto')")
    return dev


def _resolve_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    if amp and device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device (bf16 autocast), got device {device}")
    return bool(amp)


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun environment; (0, 1, 0) outside it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _open_group(world: int, device: str | torch.device, local_rank: int) -> bool:
    """Under torchrun, open the process group (NCCL on CUDA, gloo on CPU) unless open; True when ``fit`` owns it."""
    if world == 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if resolve_device(device, local_rank).type == "cuda" else "gloo")
    return True


def _use_device(device: str | torch.device, local_rank: int) -> torch.device:
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def _network(model: nn.Module, device: torch.device, world: int, compile: bool) -> nn.Module:
    """The module a step calls: ``model``, wrapped in DistributedDataParallel under torchrun, compiled on request."""
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if compile else net
