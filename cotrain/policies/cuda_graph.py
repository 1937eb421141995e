"""`GraphedSampler`: a policy's sampling as one CUDA-graph replay per input shape instead of hundreds of launches.

Why: the small VLA's `sample` (CNN, trunk, K denoising steps through a cross-attention decoder) is a few hundred
tiny kernels; on an H100 a call for 8 envs took ~22 ms, bound by the CPU cost of launching them, and sampling was
half or more of Stage II's rollout time. A CUDA graph launches the whole recorded sequence at once.

Recipe (PyTorch's "CUDA Graphs" notes, whole-network capture):
- the graphed function is tensor-only: no host syncs, no data-dependent Python branches, no random draws (heads draw
  their noise first, `ActionHead.draw_noise`), and its shapes are fixed per graph;
- one graph per key (the function's static arguments + every input's shape and dtype): inputs are copied into
  static buffers, a few warm-up runs go on a side stream, then the capture runs on that side stream into a memory
  pool shared by this sampler's graphs (safe: they never run concurrently, see below);
- replays run on the caller's current stream (the rollout thread's own stream included), after the input copies on
  that stream, and wait for the previous replay whatever stream it ran on; the outputs are cloned before they are
  returned, since the next replay overwrites them. One lock per sampler serialises threads.
Weights: a graph reads the parameters' and buffers' storage, so in-place updates (optimizer.step, load_state_dict)
are seen by the next replay; if any storage moved (`.to()`, a replaced parameter) the cache is dropped and graphs are
recaptured. At most `max_graphs` graphs: further shapes run eagerly (one warning), so an unbounded set of shapes
never costs unbounded memory, nor more time than no graphs at all.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Tree = Any
"""A tensor, or a dict / tuple / list of trees (a function's inputs and outputs)."""

_CAPTURE_LOCK = threading.Lock()
"""PyTorch allows one capture underway per process at a time."""


def tree_map(fn: Callable[[torch.Tensor], Any], tree: Tree) -> Tree:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, v) for v in tree)
    raise TypeError(f"GraphedSampler: inputs and outputs must be tensors or dicts/tuples/lists of them, "
                    f"got {type(tree).__name__}")


def tree_copy_(dst: Tree, src: Tree) -> None:
    """Copy every tensor of `src` into the same place in `dst` (same structure, as `signature` guarantees)."""
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, dict):
        for k in dst:
            tree_copy_(dst[k], src[k])
    else:
        for d, s in zip(dst, src):
            tree_copy_(d, s)


def signature(tree: Tree) -> Hashable:
    """Structure, shapes, dtypes and devices of a tree: what a graph's static input buffers fix."""
    if isinstance(tree, torch.Tensor):
        return tuple(tree.shape), tree.dtype, tree.device
    if isinstance(tree, dict):
        return tuple((k, signature(v)) for k, v in tree.items())
    return tuple(signature(v) for v in tree)


def _first_tensor(tree: Tree) -> torch.Tensor | None:
    out: list[torch.Tensor] = []
    tree_map(out.append, tree)
    return out[0] if out else None


def _is_fsdp(module: nn.Module) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: Tree
    """Static input buffers: each call copies its inputs here."""
    outputs: Tree
    """Static outputs: each replay overwrites them."""


class GraphedSampler:
    """Cache of CUDA graphs of one module's tensor-only function, keyed by static arguments and input shapes."""

    def __init__(self, max_graphs: int = 16, warmup: int = 3) -> None:
        self.max_graphs, self.warmup = max_graphs, warmup
        self.graphs: dict[Hashable, _Graph] = {}
        self.captures = 0
        """Graphs captured so far (recaptures after a weight move included)."""
        self.capture_s = 0.0
        """Wall seconds spent warming up and capturing, in total."""
        self._dicts: tuple[list[dict], list[dict]] | None = None
        """The submodule dicts and the parameter/buffer dicts of the module's tree, for `_storage_key`."""
        self._weights: tuple[int, ...] | None = None
        self._pool: Any = None
        self._side: torch.cuda.Stream | None = None
        self._done: torch.cuda.Event | None = None
        self._lock = threading.Lock()
        self._warned = False

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        """A copy (deepcopy of the policy, pickling) starts empty: graphs are bound to the original's tensors."""
        return type(self), (self.max_graphs, self.warmup)

    @staticmethod
    def usable(module: nn.Module) -> bool:
        """Graphs apply to a CUDA module outside autograd and outside another capture (which should record the
        eager kernels), and not to an FSDP-sharded one (its hooks gather parameters into storage that moves)."""
        param = next(module.parameters(), None)
        return (param is not None and param.is_cuda and not torch.is_grad_enabled()
                and not torch.cuda.is_current_stream_capturing() and not _is_fsdp(module))

    def __call__(self, module: nn.Module, fn: Callable[..., Tree], static_key: Hashable,
                 inputs: dict[str, Tree]) -> Tree:
        """fn(**inputs), through the graph of (static_key, inputs' shapes), captured on first use. `static_key` must
        hold every non-tensor argument `fn` depends on; `module` owns the weights `fn` reads."""
        with self._lock:
            if self._dicts is None or self._storage_key() != self._weights:
                self.clear()
                modules = list(module.modules())
                self._dicts = [m._modules for m in modules], [d for m in modules for d in (m._parameters, m._buffers)]
                self._weights = self._storage_key()
            modes = torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cuda")  # baked into a capture
            key = (static_key, modes, signature(inputs))
            entry = self.graphs.get(key)
            if entry is None and len(self.graphs) >= self.max_graphs:
                self._warn_full()
                return fn(**inputs)
            device = _first_tensor(inputs).device
            stream = torch.cuda.current_stream(device)
            if self._done is not None:  # the previous replay (maybe on another stream) has left the pool
                stream.wait_event(self._done)
            if entry is None:
                entry = self.graphs[key] = self._capture(fn, inputs, device)
            else:
                tree_copy_(entry.inputs, inputs)
            entry.graph.replay()
            outputs = tree_map(torch.clone, entry.outputs)
            if self._done is None:
                self._done = torch.cuda.Event()
            self._done.record(stream)
            return outputs

    def _storage_key(self) -> tuple[int, ...]:
        """Identity of every submodule and address of every parameter and buffer: a change means the graphs read
        stale storage. Paid every call, so it reads the modules' own dicts, kept from the last capture (the dicts
        stay; their entries are what `setattr`, `.to()` or `p.data = …` replace): ~8x cheaper than `parameters()`."""
        module_dicts, tensor_dicts = self._dicts or ([], [])
        return tuple([id(child) for d in module_dicts for child in d.values()]
                     + [t.data_ptr() for d in tensor_dicts for t in d.values() if t is not None])

    def _capture(self, fn: Callable[..., Tree], inputs: dict[str, Tree], device: torch.device) -> _Graph:
        """Warm up on the side stream, then capture there (static buffers already hold `inputs`)."""
        start = time.perf_counter()
        static = tree_map(torch.clone, inputs)
        if self._pool is None:
            self._pool, self._side = torch.cuda.graph_pool_handle(), torch.cuda.Stream(device)
        current = torch.cuda.current_stream(device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            for _ in range(self.warmup):  # lazy initialisation (cuBLAS/cuDNN handles, workspaces) outside the capture
                fn(**static)
        current.wait_stream(self._side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the learner thread may allocate or sync while the rollout thread captures.
        with _CAPTURE_LOCK, torch.cuda.device(device), torch.cuda.graph(
                graph, pool=self._pool, stream=self._side, capture_error_mode="thread_local"):
            outputs = fn(**static)
        self.captures += 1
        self.capture_s += time.perf_counter() - start
        return _Graph(graph, static, outputs)

    def clear(self) -> None:
        """Drop every graph (after the last replay has finished with their buffers)."""
        if self._done is not None:
            self._done.synchronize()
        self.graphs.clear()
        self._dicts, self._weights, self._pool, self._side, self._done = None, None, None, None, None

    def _warn_full(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"GraphedSampler: {self.max_graphs} CUDA graphs cached; further input shapes (batch size, "
                          "instruction length) run eagerly", stacklevel=3)
