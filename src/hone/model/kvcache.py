"""A batch's KV cache as preallocated buffers that a decoding step, a leaving row and a joining
group change in place: `hone serve`'s scheduler and online RL's sampler (`hone.train.rollout`).

transformers' `DynamicCache` concatenates every layer's keys and values with the new token at
each step, and building one from tensors copies them once more; dropping a finished row or
adding a joining group copied the whole cache again. On the embedded model at 27 rows that was
over a third of the serving time (py-spy). Ours, because a batch's cache lives for many steps
and only its owner changes it: each layer holds `rows, heads, columns, dim` buffers
with spare rows and columns and gives attention views `[:rows, :, start:length]`:

- a step writes one column at `length`;
- a leaving row is overwritten by the last row (the scheduler reorders its rows the same way);
- padding columns that no row needs any more are dropped by moving `start`;
- a joining group is written into the spare rows, right-aligned at `length` (its columns
  before the prompt zeroed);
- only when rows or columns run out is everything copied into larger buffers.

Columns outside a row's tokens may hold another row's old keys: the attention mask hides them,
and buffers start zeroed, so nothing there is ever NaN.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

SPARE_COLUMNS = 64  # columns allocated beyond what a new layout needs


class RowsLayer(DynamicLayer):
    """One layer's keys and values: `keys = key_buffer[:rows, :, start:length]`."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], width: int, capacity: int,
                 spare: int = SPARE_COLUMNS):
        """Stack the row groups `keys[i]`/`values[i]` (each `rows_i, heads, length_i, dim`),
        right-aligned in `width` columns, in buffers of `capacity` rows and `spare` more columns."""
        super().__init__()
        self.device, self.dtype, self.is_initialized = keys[0].device, keys[0].dtype, True
        self.rows = sum(k.shape[0] for k in keys)
        capacity = max(capacity, self.rows)
        self.key_buffer = _buffer(keys, width, capacity, spare)
        self.value_buffer = _buffer(values, width, capacity, spare)
        self.start, self.length = 0, width
        self._views()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[2]
        if end > self.key_buffer.shape[2]:
            self._relayout(end - self.length)
            end = self.length + key_states.shape[2]
        self.key_buffer[: self.rows, :, self.length : end] = key_states
        self.value_buffer[: self.rows, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def move_row(self, source: int, target: int) -> None:
        self.key_buffer[target, :, self.start : self.length] = self.key_buffer[source, :, self.start : self.length]
        self.value_buffer[target, :, self.start : self.length] = self.value_buffer[source, :, self.start : self.length]

    def append_rows(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        rows, width = self.rows + keys.shape[0], keys.shape[2]
        for buffer, new in ((self.key_buffer, keys), (self.value_buffer, values)):
            buffer[self.rows : rows, :, start : self.length - width] = 0
            buffer[self.rows : rows, :, self.length - width : self.length] = new
        self.rows, self.start = rows, start
        self._views()

    def _relayout(self, columns: int) -> None:
        """Into buffers with room for `columns` more (and as many again to spare), from column 0."""
        capacity = self.key_buffer.shape[0]
        width = self.length - self.start
        spare = max(columns, width, SPARE_COLUMNS)
        self.key_buffer = _buffer([self.keys], width, capacity, spare)
        self.value_buffer = _buffer([self.values], width, capacity, spare)
        self.start, self.length = 0, width

    def _views(self) -> None:
        self.keys = self.key_buffer[: self.rows, :, self.start : self.length]
        self.values = self.value_buffer[: self.rows, :, self.start : self.length]


class BatchCache(Cache):
    """Every layer's `RowsLayer`; the scheduler keeps one across steps (the model updates it in place)."""

    def __init__(self, layers: list[RowsLayer]):
        super().__init__(layers=layers)

    @classmethod
    def stack(cls, groups: list[list[tuple[torch.Tensor, torch.Tensor]]], capacity: int,
              spare: int = SPARE_COLUMNS) -> "BatchCache":
        """Row groups (each a list of per-layer (keys, values)) one under another, left-padded to
        the longest, with room for `capacity` rows and `spare` more columns."""
        width = max(group[0][0].shape[2] for group in groups)
        return cls([RowsLayer([k for k, _ in layer], [v for _, v in layer], width, capacity, spare) for layer in zip(*groups)])

    @property
    def rows(self) -> int:
        return self.layers[0].rows

    @property
    def width(self) -> int:
        return self.layers[0].length - self.layers[0].start

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in self.layers]

    def remove(self, leaving: list[int], mask: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Drop rows `leaving`, each overwritten by the current last row, then the columns that pad
        every row left. `mask` is the batch's `rows, width` attention mask (1 on real tokens).
        Returns the old row index now at each position (apply it to everything else indexed by
        row) and the mask reordered and cut the same way."""
        order = list(range(self.rows))
        for row in sorted(leaving, reverse=True):  # every leaving row after `row` is gone: the last row stays
            last = len(order) - 1
            if row != last:
                for layer in self.layers:
                    layer.move_row(last, row)
                order[row] = order[last]
            order.pop()
            for layer in self.layers:
                layer.rows -= 1
        mask = mask[torch.tensor(order, device=mask.device)]
        first = int(mask.any(0).nonzero()[0])  # columns before this pad every row left: out of the views
        for layer in self.layers:
            layer.start += first
            layer._views()
        return order, mask[:, first:]

    def append(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
        """Write a joining group (per-layer (keys, values), `rows, heads, width, dim`) into the spare
        rows, right-aligned with the batch; False (nothing written) where rows or columns run short."""
        first = self.layers[0]
        rows, width = pairs[0][0].shape[0], pairs[0][0].shape[2]
        if first.rows + rows > first.key_buffer.shape[0] or width > first.length:
            return False
        start = min(first.start, first.length - width)
        for layer, (keys, values) in zip(self.layers, pairs):
            layer.append_rows(keys, values, start)
        return True


def _buffer(parts: list[torch.Tensor], width: int, capacity: int, spare: int = SPARE_COLUMNS) -> torch.Tensor:
    """Zeros of `capacity, heads, width + spare, dim` with `parts` one under another, right-aligned at `width`."""
    first = parts[0]
    buffer = first.new_zeros(capacity, first.shape[1], width + spare, first.shape[3])
    start = 0
    for part in parts:
        end = start + part.shape[0]
        buffer[start:end, :, width - part.shape[2] : width] = part
        start = end
    return buffer
