"""IA3 over PEFT: one trained vector per adapted layer that rescales the keys, the values and
the MLP's inner activations (Liu et al. 2022). A few thousand parameters per model: tiny to
store and to switch, many tasks over one base. PEFT merges it into the weights (a diagonal
scale is linear), so `hone export` folds it in like LoRA."""

from __future__ import annotations

from hone.errors import HoneError
from hone.model.offline import import_adapter_libraries
from hone.model.sizing import Sizing, set_rates

ATTENTION = ("k_proj", "v_proj")
"""Scaled on their outputs: one weight per key and value channel."""
FEEDFORWARD = ("down_proj",)
"""Scaled on its input: one weight per MLP inner unit."""


def add_ia3(model, args):
    """Freeze the base and add IA3's scaling vectors (PEFT) to the keys, values and MLP."""
    import_adapter_libraries()
    from peft import IA3Config, get_peft_model

    config = IA3Config(target_modules=list(ATTENTION + FEEDFORWARD), feedforward_modules=list(FEEDFORWARD),
                       task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, config)
    except ValueError as exc:
        raise HoneError(f"adapter.method=ia3: {str(exc).splitlines()[0]}",
                        f"IA3 adapts linear layers named {', '.join(ATTENTION + FEEDFORWARD)}; use lora for this model") from None
    set_rates(model, args, DEFAULT_LR_RATIO)
    return model


DEFAULT_LR_RATIO = 10.0
"""IA3 trains at 10x the run's learning rate unless `adapter.lr_ratio` says otherwise: its
scales start at 1 and a few thousand of them must move far (on the demo task, 6 epochs at
1x left field exact match at 0; at 10x held-out answer perplexity fell from 1662 to 4.9)."""


def ia3_size(arch, settings) -> Sizing:
    """One weight per output of k and v, one per input of the MLP's down projection; the
    scaled outputs are saved for backward."""
    params = sum((n_in if name in FEEDFORWARD else n_out) * count
                 for name, (n_in, n_out, count) in arch.lora_pairs.items() if name in ATTENTION + FEEDFORWARD)
    return Sizing(trainable=params, added=params, saved_per_token=2 * params / max(arch.layers, 1))
