"""Each row of a batch through its own LoRA adapter, in one pass per layer.

PEFT's `adapter_names=` path splits every LoRA layer's input by adapter and loops over the
groups in Python: about half of a 24-row decoding step on the embedded model (cProfile). Ours,
because serving many adapters at once is what `hone serve` is for: every adapter's A and B of
a layer are joined once side by side (A: [in, adapters x rank], B: [adapters x rank, out],
zero-padded to the layer's largest rank, the scale folded into B), and a pass is two matrix
products with the low-rank activations of the other adapters' columns zeroed per row (a row on
the base keeps none). That computes every adapter's A for every row, cheap while adapters x rank
stays far below the layer's width (a handful of adapters); gathering per-row weights instead
cost more than the products on the embedded model.
Plain LoRA on Linear layers only: anything else (DoRA, a LoRA on an embedding) keeps PEFT's path.
"""

from __future__ import annotations

import functools

import torch

from hone.engine.reroute import reroute


class RowAdapters:
    """The joined adapters of every LoRA layer; `use(names)` picks each row's before a forward."""

    def __init__(self, layers: list, names: list[str]):
        self.slot = {name: index for index, name in enumerate(names)}
        self.count = len(names)
        self.index: torch.Tensor | None = None
        self.masks: dict[int, torch.Tensor] = {}  # rank -> rows, 1, adapters x rank
        self.undo: list = []
        for module in layers:
            a, b = _join(module, names)
            reroute(module, functools.partial(self._forward, module, a, b), self.undo)

    @classmethod
    def install(cls, model: torch.nn.Module, names: list[str]) -> "RowAdapters | None":
        """Reroute every LoRA layer of `model` (PEFT adapters `names`); None where one cannot be."""
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear

        lora = [m for m in model.modules() if isinstance(m, LoraLayer)]
        if not names or not lora or any(type(m) is not Linear or m.lora_variant or m.merged for m in lora):
            return None
        return cls(lora, names)

    def use(self, peft_names: list[str], device: torch.device) -> None:
        """Each row's adapter for the next forwards (a name not among them: the base)."""
        self.index = torch.tensor([self.slot.get(name, -1) for name in peft_names], device=device)
        self.masks = {}

    def remove(self) -> None:
        for restore in reversed(self.undo):
            restore()
        self.undo.clear()

    def _mask(self, rank: int, dtype: torch.dtype) -> torch.Tensor:
        if rank not in self.masks:
            slots = torch.arange(self.count, device=self.index.device)
            keep = (self.index[:, None] == slots[None, :]).to(dtype)  # rows, adapters
            self.masks[rank] = keep.repeat_interleave(rank, dim=1)[:, None, :]
        return self.masks[rank]

    def _forward(self, module, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = module.base_layer(x, *args, **kwargs)
        rows = x.shape[0]
        flat = x.reshape(rows, -1, x.shape[-1]).to(a.dtype)  # rows, tokens, in
        low = (flat @ a) * self._mask(a.shape[1] // self.count, a.dtype)  # rows, tokens, adapters x rank
        return result + (low @ b).reshape(result.shape).to(result.dtype)


def _join(module, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A of shape [in, adapters x rank], B x scale of shape [adapters x rank, out]): an adapter
    this layer does not have stays zero, smaller ranks are zero-padded."""
    present = [name for name in names if name in module.lora_A]
    rank = max((module.lora_A[name].weight.shape[0] for name in present), default=1)
    weight = module.base_layer.weight
    dtype = module.lora_A[present[0]].weight.dtype if present else weight.dtype
    a = torch.zeros(module.in_features, len(names) * rank, dtype=dtype, device=weight.device)
    b = torch.zeros(len(names) * rank, module.out_features, dtype=dtype, device=weight.device)
    for slot, name in enumerate(names):
        if name in present:
            r = module.lora_A[name].weight.shape[0]
            a[:, slot * rank : slot * rank + r] = module.lora_A[name].weight.detach().T
            b[slot * rank : slot * rank + r] = (module.lora_B[name].weight.detach() * module.scaling[name]).T
    return a, b
