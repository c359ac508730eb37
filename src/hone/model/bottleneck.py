"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): after a block's output,
a down-projection to `bottleneck_size`, a nonlinearity, an up-projection back, and a
residual: y + up(act(down(y))). `pfeiffer` places one after each MLP, `houlsby` one after
each attention block too. The up-projection starts at zero, so training starts from the base.

PEFT has no format for them, so a run saves its own, self-describing one: the adapters'
weights (`bottleneck.safetensors`) beside `bottleneck_config.json`, which names the format,
the placement, the sizes, the nonlinearity and the base model. Every command that loads a
run rebuilds the same adapters on the base from that file alone. They cannot be merged:
the nonlinearity between the two projections is no matrix the base's weights could absorb.

The adapters are child modules of each decoder layer (`hone_bottleneck_attention`,
`hone_bottleneck_mlp`) applied by forward hooks on the attention and MLP modules, so the
base's own modules and weight names stay as they are (the speed layer runs them unchanged).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hone.config import AdapterArgs
from hone.errors import HoneError
from hone.model.sizing import Sizing, set_rates

WEIGHTS_FILE = "bottleneck.safetensors"
CONFIG_FILE = "bottleneck_config.json"
FORMAT = "hone-bottleneck/1"
PLACEMENTS = {"pfeiffer": ("mlp",), "houlsby": ("self_attn", "mlp")}
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}
CHILD = {"self_attn": "hone_bottleneck_attention", "mlp": "hone_bottleneck_mlp"}


class Bottleneck(nn.Module):
    """y -> y + up(act(down(y))), weights in fp32, the output in y's dtype."""

    def __init__(self, hidden: int, size: int, activation: str):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)  # the identity at the start: training starts from the base
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # y: B, T, C
        inner = self.up(self.act(self.down(y.to(self.down.weight.dtype))))
        return y + inner.to(y.dtype)


def _after(adapter: Bottleneck):
    """A forward hook that passes a block's output (or the first item of its output tuple) through `adapter`."""
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)
    return hook


def settings_of(args, hidden: int, layers: int, base: str) -> dict:
    """What `bottleneck_config.json` holds: everything needed to rebuild the adapters."""
    return {"format": FORMAT, "placement": args.bottleneck_placement, "after": list(PLACEMENTS[args.bottleneck_placement]),
            "hidden_size": hidden, "bottleneck_size": args.bottleneck_size, "activation": args.bottleneck_activation,
            "layers": layers, "base_model": base}


def decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    if not layers or not all(hasattr(layer, block) for layer in layers for block in ("self_attn", "mlp")):
        raise HoneError("adapter.method=bottleneck: this model's decoder layers have no self_attn and mlp blocks",
                        "use adapter.method=lora for this architecture")
    return layers


def insert(model, settings: dict):
    """Add the adapters `settings` describes to `model` (in place) and return it."""
    for layer in decoder_layers(model):
        for block in settings["after"]:
            adapter = Bottleneck(settings["hidden_size"], settings["bottleneck_size"], settings["activation"])
            adapter.to(next(layer.parameters()).device)
            layer.add_module(CHILD[block], adapter)
            getattr(layer, block).register_forward_hook(_after(adapter))
    model.__dict__["_hone_bottleneck"] = settings
    return model


def add_bottlenecks(model, args):
    """Freeze the base and add trainable bottleneck adapters where `args.bottleneck_placement` says."""
    model.requires_grad_(False)
    config = model.config
    insert(model, settings_of(args, config.hidden_size, config.num_hidden_layers, str(getattr(config, "_name_or_path", ""))))
    for name, param in model.named_parameters():
        param.requires_grad_(".hone_bottleneck_" in name)
    set_rates(model, args)
    return model


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {name: t.detach().contiguous() for name, t in model.state_dict().items() if ".hone_bottleneck_" in name}


def save_bottlenecks(model, run_dir: Path) -> None:
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    save_file(adapter_state(model), str(run_dir / WEIGHTS_FILE), metadata={"format": FORMAT})
    (run_dir / CONFIG_FILE).write_text(json.dumps(model.__dict__["_hone_bottleneck"], indent=1))


def read_settings(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HoneError(f"could not read {path}: {exc}", "the run may not have finished; resume it first") from None
    if settings.get("format") != FORMAT:
        raise HoneError(f"{path} is not a {FORMAT} file (format: {settings.get('format')!r})",
                        "point at the run folder hone wrote it in")
    return settings


def load_bottlenecks(base, run_dir: Path):
    """`base` with the run's adapters rebuilt from `bottleneck_config.json` and their weights loaded."""
    from safetensors.torch import load_file

    settings = read_settings(run_dir)
    if settings["hidden_size"] != base.config.hidden_size or settings["layers"] != base.config.num_hidden_layers:
        raise HoneError(f"{run_dir} holds adapters for a {settings['layers']}-layer, {settings['hidden_size']}-wide model",
                        f"load it over its base model ({settings['base_model']})")
    insert(base, settings)
    tensors = load_file(str(Path(run_dir) / WEIGHTS_FILE))
    missing = sorted(set(adapter_state(base)) - set(tensors))
    if missing:
        raise HoneError(f"{run_dir / WEIGHTS_FILE} lacks {missing[0]}", "the run may not have finished; resume it first")
    base.load_state_dict(tensors, strict=False)
    return base


def refuse_merge(base, run_dir: Path):
    settings = read_settings(run_dir)
    raise HoneError(f"{run_dir} holds bottleneck adapters, which cannot be merged into the base: the "
                    f"{settings['activation']} between their two projections is not linear, so no weight matrix equals them",
                    "use the run folder itself: hone eval, hone compare and hone chat load it over its base")


def bottleneck_size(arch, settings) -> Sizing:
    """Two projections with biases per adapter, one or two adapters per layer; each saves its
    input (2 bytes per hidden unit), its inner activation and the nonlinearity's output."""
    args = settings.adapter or AdapterArgs(method="bottleneck")
    per_layer = len(PLACEMENTS[args.bottleneck_placement])
    params = arch.layers * per_layer * (2 * arch.hidden * args.bottleneck_size + args.bottleneck_size + arch.hidden)
    return Sizing(trainable=params, added=params, saved_per_token=per_layer * (2 * arch.hidden + 4 * args.bottleneck_size))
