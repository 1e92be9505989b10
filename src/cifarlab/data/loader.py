"""``DeviceLoader``: a split held once on the device as uint8, batched and augmented there.

All randomness of an epoch (shuffle order, augmentation parameters) is derived from
(seed, epoch, batch number), never from a running generator, so a run resumed at epoch k
sees exactly the batches an uninterrupted run would.

Data-parallel training (``rank``, ``world_size``): ``batch_size`` stays the *global*
batch; every rank walks the same global order and keeps its contiguous share of each
global batch (``tensor_split``), so the ranks together see exactly the batches one
process would. Augmentation is drawn per rank (seeded by rank too), to augment only the
images a rank keeps.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from cifarlab.data.augment import Augment
from cifarlab.data.preprocess import normalize
from cifarlab.data.types import Split


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from small integers (seed, epoch, batch, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class DeviceLoader:
    def __init__(self, split: Split, batch_size: int, device: str | torch.device = "cpu",
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 shuffle: bool = True, drop_last: bool = False, augment: Augment | None = None,
                 seed: int = 0, grayscale: int | None = None, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if grayscale not in (None, 1, 3):
            raise ValueError(f"grayscale must be None, 1 or 3, got {grayscale}")
        self.device = torch.device(device)
        # NHWC uint8 -> NCHW uint8, moved once; 150 MB for all of CIFAR-10's training set
        self.images = torch.from_numpy(np.ascontiguousarray(split.images)).to(self.device)
        self.images = self.images.permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(np.asarray(split.labels, np.int64)).to(self.device)
        channels = grayscale or 3
        self.mean = self._stat(mean, channels)
        self.std = self._stat(std, channels)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.seed, self.grayscale = augment, seed, grayscale
        self.dtype, self.channels_last = dtype, channels_last
        self.epoch = 0
        self.size: int | None = None  # side in pixels the batches are resized to; None: as stored
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = rank, world_size

    def _stat(self, values: Sequence[float], channels: int) -> torch.Tensor:
        t = torch.as_tensor(list(values), dtype=torch.float32)
        if t.numel() not in (1, channels):
            raise ValueError(f"mean/std need 1 or {channels} values, got {t.numel()}")
        return t.expand(channels).reshape(1, channels, 1, 1).to(self.device)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        batches = self._global_batches()
        last = len(self.labels) - (batches - 1) * self.batch_size  # size of the last global batch
        return batches - int(batches > 0 and last <= self.rank)  # this rank's share of it is empty

    def _global_batches(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """The sample order of an epoch (a function of seed and epoch only)."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(self.seed, epoch)))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order().to(self.device)
        for b in range(self._global_batches()):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.world_size > 1:
                index = torch.tensor_split(index, self.world_size)[self.rank]
                if not len(index):  # a short last batch has fewer images than ranks
                    continue
            yield self._batch(index, b), self.labels[index]

    def _batch(self, index: torch.Tensor, batch_no: int) -> torch.Tensor:
        x = normalize(self.images[index], self.mean, self.std, self.grayscale)
        if self.augment:
            parts = (self.seed, self.epoch, batch_no, 1) + ((self.rank,) if self.world_size > 1 else ())
            g = torch.Generator().manual_seed(derive_seed(*parts))
            x = self.augment(x, g, epoch=self.epoch, index=index, seed=self.seed)
        if self.size and self.size != x.shape[-1]:
            x = resize(x, self.size)
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """A float NCHW batch resized to size x size: area-averaged when shrinking (no aliasing,
    and it is what a lower-resolution camera would see), bilinear when growing."""
    mode = "area" if size < x.shape[-1] else "bilinear"
    extra = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(x, size=(size, size), mode=mode, **extra)


def parse_resolutions(spec: str) -> list[tuple[int, int]]:
    """``"16:4,24:2"`` -> [(16, 4), (24, 2)]: the first 4 epochs at 16 px, the next 2 at 24 px,
    the rest at the stored size. "" or "none": every epoch at the stored size."""
    spec = (spec or "").strip()
    if spec.lower() in ("", "none"):
        return []
    out = []
    for part in spec.split(","):
        size, _, epochs = part.strip().partition(":")
        if not (size.isdigit() and epochs.isdigit() and int(size) >= 8 and int(epochs) >= 1):
            raise ValueError(f"resolution stage {part.strip()!r} must be SIZE:EPOCHS with SIZE >= 8 px "
                             f"and EPOCHS >= 1, e.g. '16:4,24:2'")
        out.append((int(size), int(epochs)))
    return out


def format_resolutions(stages) -> str:
    """[(16, 4), (24, 2)] (or [[16, 4], [24, 2]]) -> ``"16:4,24:2"``; [] -> ``""``: the inverse of
    ``parse_resolutions``."""
    return ",".join(f"{side}:{epochs}" for side, epochs in stages)


def size_at_epoch(stages: list[tuple[int, int]], epoch: int) -> int | None:
    """The side for 0-based ``epoch`` under ``stages``; None past the last stage (stored size)."""
    for size, epochs in stages:
        if epoch < epochs:
            return size
        epoch -= epochs
    return None
