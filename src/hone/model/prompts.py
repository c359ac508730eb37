"""Prompt tuning (Lester et al. 2021) and prefix tuning (Li & Liang 2021) over PEFT: trained
vectors every example sees before its first token, as input embeddings (prompt) or as
keys and values in every attention layer (prefix). Saved in PEFT's format.

PEFT puts them in front of the batch inside `PeftModel.forward`, but hone's loss calls the
decoder directly (`hone.train.loss`), and its batches are often packed: one row of several
examples, each of which must see the virtual tokens as if it were alone. So the decoder
itself gets them, from a pair of hooks around its forward, and after it the hidden states
go back to the caller's layout without the virtual positions. Prompt tuning on a packed row
stays packed: PEFT's `get_prompt` embeddings are put in front of each example inside the
row (N more positions each), so the speed layer's packed attention runs as for any batch.
Otherwise (prefix tuning, or padded rows) the batch becomes padded rows, one per example,
with the virtual tokens in front (prompt: N embeddings and N more positions; prefix: a cache
of N keys and values per layer, real positions shifted by N), and within the call the
attention is plain SDPA with the padding mask (the speed layer's packed kernels see no masks).
PEFT's own paths (generation, `PeftModel.forward`) pass `inputs_embeds` or a non-empty
cache, and the hooks leave those calls alone.

Generation is hone's too (`generate_with_virtual_tokens`, installed as the model's `generate`):
with transformers 5.25 and PEFT 0.21.2, `PeftModel.generate` of a prompt- or prefix-tuned model
continues differently from the model's own forward pass after its first token (greedy answers
turn to noise), so evaluation scored text the trained model would not write. hone lays the
virtual tokens out itself, after each row's left padding (prompt) or as a prefilled cache
before it (prefix), and calls the base model's `generate`.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch
import torch.nn.functional as F

from hone.data.collate import PACK_MULTIPLE, row_length
from hone.errors import HoneError
from hone.model.offline import import_adapter_libraries
from hone.model.sizing import Sizing, set_rates

PACKING_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
PLAIN_ATTENTION = "sdpa"


def add_prompt_tuning(model, args):
    """Freeze the base; N trained input embeddings start as embeddings of random vocabulary tokens."""
    import_adapter_libraries()
    from peft import PromptTuningConfig

    config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual_tokens(args, PROMPT_TOKENS),
                                prompt_tuning_init="SAMPLE_VOCAB")
    return _wrapped(model, config, args)


def add_prefix_tuning(model, args):
    """Freeze the base; N trained keys and values per attention layer."""
    import_adapter_libraries()
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual_tokens(args, PREFIX_TOKENS))
    return _wrapped(model, config, args)


def _wrapped(model, config, args):
    from peft import get_peft_model

    peft_model = get_peft_model(model, config)
    install_virtual_tokens(peft_model)
    set_rates(peft_model, args, DEFAULT_LR_RATIO)
    return peft_model


DEFAULT_LR_RATIO = 10.0
"""Virtual tokens train at 10x the run's learning rate unless `adapter.lr_ratio` says otherwise:
a few thousand parameters steering a frozen model need larger steps than LoRA (prompt tuning's
paper used 0.3 with Adafactor)."""

PROMPT_TOKENS = 100
"""Prompt tuning's virtual tokens unless `adapter.num_virtual_tokens` says otherwise: Lester et
al.'s length. Measured on the demo task (docs/methods.md's recipe): with 20 the answers fall
apart (chrF below the base's), with 100 they beat it."""

PREFIX_TOKENS = 20
"""Prefix tuning's: its N keys and values sit in every layer, so fewer go further (Li & Liang)."""


def virtual_tokens(args, default: int) -> int:
    """`args.num_virtual_tokens`, or the method's default where the run leaves it unset."""
    return args.num_virtual_tokens if args is not None and args.num_virtual_tokens is not None else default


def install_virtual_tokens(peft_model) -> None:
    """Hooks on `peft_model`'s decoder that put its virtual tokens before every example of a
    batch the decoder is called with directly (see the module docstring)."""
    decoder = getattr(peft_model.get_base_model(), "model", None)
    if decoder is None:
        raise HoneError("prompt or prefix tuning: this model has no decoder module (`.model`)", "use adapter.method=lora")
    call = _Call(peft_model)
    decoder.register_forward_pre_hook(call.before, with_kwargs=True)
    decoder.register_forward_hook(call.after, with_kwargs=True)
    peft_model.generate = partial(generate_with_virtual_tokens, peft_model)


def generate_with_virtual_tokens(peft_model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                                 **kwargs) -> torch.Tensor:
    """`generate` with the virtual tokens where training put them: the prompt ids followed by the
    new ones, as transformers returns them. Rows are left-padded (`attention_mask` 0 before the
    prompt); positions follow the mask, so each row's first real token sits at position N."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    batch, length = input_ids.shape
    pads = length - mask.sum(dim=1)
    if bool((mask != (torch.arange(length, device=mask.device) >= pads[:, None]).to(mask.dtype)).any()):
        raise HoneError("generation with prompt or prefix tuning needs left-padded rows", "pad prompts on the left")
    config, base = peft_model.active_peft_config, peft_model.get_base_model()
    n = config.num_virtual_tokens
    ones = mask.new_ones(batch, n)
    if config.peft_type == "PREFIX_TUNING":
        # the prefix is the start of the cache; transformers skips the ids the cache already holds
        ids = torch.cat([input_ids.new_zeros(batch, n), input_ids], dim=1)
        prefix = {_cache_name(base): peft_model.get_prompt(batch)}
        out = base.generate(input_ids=ids, attention_mask=torch.cat([ones, mask], dim=1), **prefix, **kwargs)
        return out[:, n:]
    embeds = base.get_input_embeddings()(input_ids)
    virtual = peft_model.get_prompt(batch).to(embeds.dtype)
    rows = [torch.cat([embeds[b, :p], virtual[b], embeds[b, p:]]) for b, p in enumerate(pads.tolist())]
    rows_mask = [torch.cat([mask[b, :p], ones[b], mask[b, p:]]) for b, p in enumerate(pads.tolist())]
    new = base.generate(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(rows_mask), **kwargs)
    return torch.cat([input_ids, new], dim=1)  # with only embeddings in, transformers returns the new ids alone


class _Call:
    """The layout of the decoder call in flight, from `before` to `after`."""

    def __init__(self, peft_model):
        self.model = peft_model
        self.active = False
        self.rows = self.index = None  # padded rows -> the caller's flat positions
        self.packed = self.inline = False
        self.attention: list = []

    @property
    def config(self):
        return self.model.active_peft_config

    def before(self, decoder, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 renamed past_key_values
        if ids is None or kwargs.get("inputs_embeds") is not None or (cache is not None and cache.get_seq_length() > 0):
            return None  # PEFT's own forward or a later generation step: the virtual tokens are there already
        self.active, self.packed = True, "cu_seq_lens_q" in kwargs
        self.inline = self.packed and self.config.peft_type != "PREFIX_TUNING"
        if self.inline:
            return (), self._inline(decoder, ids, kwargs)
        rows, mask = self._rows(ids, kwargs)
        n, (batch, length) = self.config.num_virtual_tokens, rows.shape
        new = {k: v for k, v in kwargs.items()
               if k not in PACKING_KEYS + ("input_ids", "position_ids", "attention_mask", "cache", "past_key_values")}
        positions = torch.arange(length, device=rows.device).expand(batch, -1)
        if self.config.peft_type == "PREFIX_TUNING":
            new.update(input_ids=rows, cache=self.model.get_prompt(batch), position_ids=positions + n)
        else:
            embeds = decoder.get_input_embeddings()(rows)
            prompts = self.model.get_prompt(batch).to(embeds.dtype)
            new.update(inputs_embeds=torch.cat([prompts, embeds], dim=1),
                       position_ids=torch.arange(n + length, device=rows.device).expand(batch, -1))
        new["attention_mask"] = torch.cat([mask.new_ones(batch, n), mask], dim=1)
        self._plain_attention(decoder)
        return (), new

    def _inline(self, decoder, ids: torch.Tensor, kwargs: dict) -> dict:
        """Prompt tuning on a packed row: the N virtual embeddings go in front of each example
        inside the row, which stays packed (the speed layer's packed attention, no padding)."""
        n, bounds = self.config.num_virtual_tokens, kwargs["cu_seq_lens_q"]
        embeds = decoder.get_input_embeddings()(ids)[0]  # T, C
        virtual = self.model.get_prompt(1)[0].to(embeds.dtype)  # N, C
        starts, ends = bounds[:-1].tolist(), bounds[1:].tolist()
        pieces = [part for start, end in zip(starts, ends) for part in (virtual, embeds[start:end])]
        # example k's tokens move N * (k + 1) places to the right
        self.index = torch.cat([torch.arange(start, end, device=ids.device) + n * (k + 1)
                                for k, (start, end) in enumerate(zip(starts, ends))])
        lengths = bounds.diff() + n
        # a filler segment rounds the row to a packed row's length, as `pack_batch` does: a few
        # shapes for the matmul library's per-shape kernels, not one per batch
        filler = row_length(int(lengths.sum()), PACK_MULTIPLE) - int(lengths.sum())
        if filler:
            pieces.append(embeds.new_zeros(filler, embeds.shape[-1]))
            lengths = torch.cat([lengths, lengths.new_tensor([filler])])
        new = {k: v for k, v in kwargs.items() if k not in PACKING_KEYS + ("input_ids", "position_ids", "attention_mask")}
        new.update(inputs_embeds=torch.cat(pieces).unsqueeze(0),
                   position_ids=torch.cat([torch.arange(int(m), device=ids.device) for m in lengths]).unsqueeze(0),
                   cu_seq_lens_q=F.pad(lengths.cumsum(0), (1, 0)).to(bounds.dtype),
                   max_length_q=int(lengths.max()))
        new.update(cu_seq_lens_k=new["cu_seq_lens_q"], max_length_k=new["max_length_q"])
        return new

    def _rows(self, ids: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(padded rows B' x L, their mask): a packed row is cut into one row per example."""
        if not self.packed:
            mask = kwargs.get("attention_mask")
            self.index = None
            return ids, (torch.ones_like(ids) if mask is None else mask)
        bounds = kwargs["cu_seq_lens_q"].tolist()
        lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
        width = max(lengths)
        # flat positions of the padded rows that hold the caller's tokens, in the caller's order
        self.index = torch.cat([torch.arange(length, device=ids.device) + row * width for row, length in enumerate(lengths)])
        flat = ids.new_zeros(len(lengths) * width).index_copy(0, self.index, ids.reshape(-1))
        mask = torch.zeros(len(lengths) * width, dtype=torch.long, device=ids.device).index_fill(0, self.index, 1)
        return flat.view(len(lengths), width), mask.view(len(lengths), width)

    def _plain_attention(self, decoder) -> None:
        configs = [m.config for m in decoder.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")]
        self.attention = [(c, c._attn_implementation) for c in {id(c): c for c in configs}.values()]
        for config, _ in self.attention:
            config._attn_implementation = PLAIN_ATTENTION

    def after(self, decoder, args, kwargs, output):
        if not self.active:
            return None
        self.active = False
        for config, name in self.attention:
            config._attn_implementation = name
        self.attention = []
        hidden = output.last_hidden_state  # B', (N +) L, C
        if self.inline:
            hidden = hidden[0].index_select(0, self.index).unsqueeze(0)  # 1, T, C
        else:
            if self.config.peft_type != "PREFIX_TUNING":
                hidden = hidden[:, self.config.num_virtual_tokens:]
            if self.packed:
                hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.index).unsqueeze(0)  # 1, T, C
        output.last_hidden_state = hidden
        for name in ("cache", "past_key_values"):
            if getattr(output, name, None) is not None:
                setattr(output, name, None)  # it holds the virtual positions: no caller's cache
        return output


def _cache_name(model) -> str:
    """The keyword a model's forward takes its KV cache by: `cache` since transformers renamed it
    (5.x; `past_key_values` still works there with a FutureWarning), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def refuse_merge(base, run_dir):
    raise HoneError(f"{run_dir} holds trained virtual tokens (prompt or prefix tuning), which are inputs, not weights: "
                    "there is nothing in the base's matrices to fold them into",
                    "use the run folder itself: hone eval, hone compare and hone chat load it over its base")


def prompt_size(arch, settings) -> Sizing:
    n = virtual_tokens(settings.adapter, PROMPT_TOKENS)
    return Sizing(trainable=n * arch.hidden, added=n * arch.hidden, saved_per_token=0.0)


def prefix_size(arch, settings) -> Sizing:
    """A key and a value of every key/value head per layer, for each virtual token."""
    n = virtual_tokens(settings.adapter, PREFIX_TOKENS)
    params = n * arch.layers * 2 * arch.kv_heads * arch.head_dim
    return Sizing(trainable=params, added=params, saved_per_token=0.0)
