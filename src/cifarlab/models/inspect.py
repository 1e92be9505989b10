"""Look inside a model: per-layer shapes, parameter counts, MACs and training memory.

Everything here runs one forward pass with forward hooks; on a model built on the
``meta`` device that pass is shape propagation only, so it is instant even for 23M
parameters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn

from cifarlab.models.registry import count_params

InputSize = tuple[int, int, int]


@dataclass
class LayerRecord:
    name: str                           # dotted module path ("blocks.0.conv1")
    kind: str                           # module class name
    input_shape: tuple[int, ...]        # without the batch dimension
    output_shapes: list[tuple[int, ...]]  # several when a module returns a tuple
    params: int                         # this module's own PyTorch parameters
    keras_params: int                   # the same plus BN moving statistics


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape[1:])


def _own_counts(m: nn.Module) -> tuple[int, int]:
    params = sum(p.numel() for p in m.parameters(recurse=False))
    moving = sum(b.numel() for n, b in m.named_buffers(recurse=False) if n in ("running_mean", "running_var"))
    return params, params + moving


def is_leaf(m: nn.Module) -> bool:
    return not any(True for _ in m.children())


def is_block_or_leaf(m: nn.Module) -> bool:
    """Stop descending at leaves and at modules that mark themselves ``diagram_block``."""
    return is_leaf(m) or bool(getattr(m, "diagram_block", False))


def _stop_modules(model: nn.Module, stop: Callable[[nn.Module], bool]) -> Iterator[tuple[str, nn.Module]]:
    def walk(prefix: str, m: nn.Module):
        for name, child in m.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if stop(child):
                yield path, child
            else:
                yield from walk(path, child)
    yield from walk("", model)


@contextmanager
def _eval_no_grad(model: nn.Module):
    """Eval mode so BN accepts a batch of one; the caller's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _forward_once(model: nn.Module, input_size: InputSize, hooks: list[tuple[nn.Module, Callable]]) -> None:
    """One zero image through ``model`` in eval mode with the forward ``hooks`` attached."""
    handles = [m.register_forward_hook(fn) for m, fn in hooks]
    try:
        with _eval_no_grad(model):
            model(torch.zeros(1, *input_size, device=_device(model)))
    finally:
        for h in handles:
            h.remove()


def trace(model: nn.Module, input_size: InputSize = (3, 32, 32),
          stop: Callable[[nn.Module], bool] = is_leaf) -> list[LayerRecord]:
    """Run one image through ``model`` and record each stop-module call in call order."""
    records: list[LayerRecord] = []

    def hook(name):
        def fn(m, inputs, output):
            outs = list(output) if isinstance(output, (list, tuple)) else [output]
            p, k = _own_counts(m) if is_leaf(m) else (sum(x.numel() for x in m.parameters()),
                                                          count_params(m).keras_total)
            records.append(LayerRecord(name, type(m).__name__, _shape(inputs[0]),
                                       [_shape(o) for o in outs], p, k))
        return fn

    _forward_once(model, input_size, [(m, hook(n)) for n, m in _stop_modules(model, stop)])
    return records


def _layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    per_image = out[0].numel()
    if isinstance(m, nn.Conv2d):  # each output value: (cin/groups) * kh * kw multiply-adds
        kh, kw = m.kernel_size
        return per_image * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return per_image * m.in_features
    return 0


def macs(model: nn.Module, input_size: InputSize = (3, 32, 32)) -> int:
    """Multiply-accumulates per image of conv and linear layers (BN, pools, acts ignored)."""
    total = 0

    def hook(m, inputs, output):
        nonlocal total
        total += _layer_macs(m, output)

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    _forward_once(model, input_size, [(m, hook) for m in layers])
    return total


def notebook_memory_estimate(model: nn.Module, batch_size: int, input_size: InputSize = (3, 32, 32),
                             records: list[LayerRecord] | None = None) -> int:
    """Bytes, by the colab-inception-v1 notebook's ``get_model_memory_usage`` formula.

    4 bytes x batch x (every layer's output elements per image + trainable +
    non-trainable params). The notebook summed Keras layers (input included); here the
    leaf modules plus the input (concatenations are not modules, so they are not counted).
    Like the notebook, it multiplies the parameter count by the batch size too, and
    ignores gradients and optimizer state: it is a rough estimate, not a measurement.
    """
    records = records if records is not None else trace(model, input_size)
    activations = _numel(input_size) + sum(_numel(s) for r in records for s in r.output_shapes)
    pc = count_params(model)
    return int(4 * batch_size * (activations + pc.trainable + pc.keras_nontrainable))


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@dataclass
class MemoryMeasurement:
    peak_bytes: int | None
    device: str
    method: str          # how it was measured, in words


def measure_train_step_memory(model: nn.Module, batch_size: int, input_size: InputSize = (3, 32, 32),
                              device: str | torch.device = "cpu") -> MemoryMeasurement:
    """Peak memory of one forward + backward + SGD-momentum step at ``batch_size``.

    cuda: torch.cuda.max_memory_allocated around the step (after a warm-up step, so the
    optimizer state exists). cpu: bytes held by parameters, buffers, gradients, optimizer
    state and the batch before the step, plus the peak of the step's own allocations as
    recorded by torch.profiler (profile_memory=True).
    """
    device = torch.device(device)
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch_size, *input_size, device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    _train_step(model, opt, x, y)  # warm-up: momentum buffers now exist
    opt.zero_grad(set_to_none=True)  # freed before measuring, so no uncounted frees inside it
    if device.type == "cuda":
        return _measure_cuda(model, opt, x, y, device)
    return _measure_cpu_profiler(model, opt, x, y)


def _train_step(model, opt, x, y) -> None:
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _measure_cuda(model, opt, x, y, device) -> MemoryMeasurement:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    _train_step(model, opt, x, y)
    torch.cuda.synchronize(device)
    return MemoryMeasurement(torch.cuda.max_memory_allocated(device), str(device),
                             "torch.cuda.max_memory_allocated over one training step")


def _held_bytes(model: nn.Module, opt: torch.optim.Optimizer, *tensors: torch.Tensor) -> int:
    seen: dict[int, int] = {}
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for t in [*model.parameters(), *model.buffers(), *grads, *state, *tensors]:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _measure_cpu_profiler(model, opt, x, y) -> MemoryMeasurement:
    from torch.profiler import ProfilerActivity, profile

    base = _held_bytes(model, opt, x, y)
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train_step(model, opt, x, y)
    try:  # private-ish API: the raw allocator events in time order
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:
        return MemoryMeasurement(None, "cpu", "torch.profiler memory events unavailable in this torch")
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return MemoryMeasurement(base + peak, "cpu",
                             "tensors held before the step + peak of the step's CPU allocations "
                             "(torch.profiler, profile_memory=True)")


@contextmanager
def _quiet_stderr():
    """Silence the profiler backend's start/stop banners, written by C++ straight to fd 2."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
