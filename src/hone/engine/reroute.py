"""Replacing a module's `forward` for the engine's lifetime, and putting back exactly what was there."""

from __future__ import annotations

_ABSENT = object()


def reroute(module, forward, undo: list) -> None:
    """module.forward = forward until `undo`'s actions run; undoing restores the instance
    `forward` that was there (another replacement of ours, say) or removes ours, and does not
    fail if another library reset it meanwhile (transformers' hub kernels did, on model.train())."""
    previous = module.__dict__.get("forward", _ABSENT)
    module.__dict__["forward"] = forward

    def restore():
        if previous is _ABSENT:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = previous

    undo.append(restore)
