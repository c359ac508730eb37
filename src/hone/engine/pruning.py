"""The last decoder layer's MLP, run only on the positions the loss reads.

Exact: after the last MLP a position is only normalised and projected on its own, so a
position the loss never reads needs no MLP output (it gets zero). In SFT the prompt is
unlabelled, about half of the tokens of the benchmark, so this removes about half of one
layer's MLP. The rows are rounded up to a packed row's length (other positions fill them),
so the matmul shapes are ones the rows already use. Off where the layer would be recomputed
in backward (gradient checkpointing) or is compiled.

`pruned_last_mlp(model)` wraps the MLP's forward once, for the engine's lifetime (after the
fused layers, so it wraps theirs); the loss says which rows it wants, batch by batch, with
`only_rows(decoder, keep)`. Outside an engine `only_rows` changes nothing.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from hone.data.collate import PACK_MULTIPLE, row_length
from hone.engine.reroute import reroute

SLOT = "_hone_wanted_rows"  # on the decoder while pruning is installed: the rows of this forward


class _Wanted:
    index: torch.Tensor | None = None


def _last_mlp(decoder):
    layers = getattr(decoder, "layers", None)
    last = layers[-1] if layers is not None and len(layers) else None
    return last, getattr(last, "mlp", None)


@contextlib.contextmanager
def pruned_last_mlp(model):
    """Until exit, the last MLP of `model`'s decoder skips rows `only_rows` marks unwanted.
    Yields whether it was installed."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, "model", None)
    last, mlp = _last_mlp(decoder) if decoder is not None else (None, None)
    # a hook on the decoder may change its rows (prompt/prefix tuning's virtual tokens): the
    # loss's row index would then point at the wrong positions
    if mlp is None or getattr(decoder, "gradient_checkpointing", False) or decoder._forward_pre_hooks \
            or getattr(last, "_compiled_call_impl", None) is not None:
        yield False
        return
    wanted, undo = _Wanted(), []
    forward = mlp.forward  # hone's fused forward, when installed before us

    def on_wanted_rows(x):
        index = wanted.index
        if index is None:
            return forward(x)
        flat = x.reshape(-1, x.shape[-1])
        if index.numel() >= flat.shape[0] or int(index.max()) >= flat.shape[0]:
            return forward(x)  # not the forward `only_rows` described
        out = forward(flat.index_select(0, index))
        return out.new_zeros(flat.shape[0], out.shape[-1]).index_copy(0, index, out).view(*x.shape[:-1], out.shape[-1])

    reroute(mlp, on_wanted_rows, undo)
    decoder.__dict__[SLOT] = wanted
    try:
        yield True
    finally:
        decoder.__dict__.pop(SLOT, None)
        for action in reversed(undo):
            action()


@contextlib.contextmanager
def only_rows(decoder, keep: torch.Tensor):
    """For the decoder forward inside: the loss reads only the positions where `keep`
    (B x T-1, over the targets) is True."""
    wanted = decoder.__dict__.get(SLOT) if decoder is not None else None
    if wanted is None:
        yield
        return
    positions = keep.shape[0] * (keep.shape[1] + 1)
    rows = row_length(max(int(keep.sum()), 1), PACK_MULTIPLE)
    if rows < positions:
        flags = F.pad(keep, (0, 1)).reshape(-1)  # over all B x T positions
        wanted.index = torch.argsort(~flags, stable=True)[:rows]  # the wanted positions first, in order
    try:
        yield
    finally:
        wanted.index = None
