"""Reward models: load one as transformers and PEFT save it, and rate answers with it (see
`hone.eval.score` for the whole story and `hone score`; online RL's `reward_model` reward
scores its completions with it too, which is why it sits below the training layer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hone.data.formats import Example
from hone.data.pairs import render_answer
from hone.data.render import RenderError, render_completion, template_messages
from hone.errors import HoneError
from hone.model.load import resolve_model_path
from hone.model.offline import import_adapter_libraries

ADAPTER_CONFIG = "adapter_config.json"
TRAINED_FIX = "give a folder saved by `hone train` with train.objective=reward, or any one-label sequence-classification model"


@dataclass
class RewardModel:
    """A loaded reward model, eval mode, no gradients."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    kind: str
    """`full` (a sequence-classification folder) or `adapter` (a SEQ_CLS PEFT adapter over `base`)."""
    base: str | None
    device: torch.device


def load_reward_model(path: str, base: str | None = None, dtype: str | None = None,
                      trust_remote_code: bool = False) -> RewardModel:
    """Load a reward model folder (full or adapter); `base` overrides the adapter's base model."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise HoneError(f"reward model folder not found: {path}", TRAINED_FIX)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    if (folder / ADAPTER_CONFIG).is_file():
        model, base, tokenizer_source = _load_adapter(folder, base, torch_dtype, trust_remote_code)
        kind = "adapter"
    else:
        model, tokenizer_source, kind = _load_full(folder, torch_dtype, trust_remote_code), folder, "full"
    tokenizer = _load_tokenizer(folder, tokenizer_source, trust_remote_code)
    model.to(device).eval().requires_grad_(False)
    return RewardModel(model, tokenizer, str(path), kind, base, device)


def _load_full(folder: Path, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if not (folder / "config.json").is_file():
        raise HoneError(f"{folder} has neither config.json nor {ADAPTER_CONFIG}: not a reward model", TRAINED_FIX)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    architectures = getattr(config, "architectures", None) or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise HoneError(f"{folder} holds a {', '.join(architectures) or 'model'}, not a sequence-classification (reward) model",
                        TRAINED_FIX)
    _require_one_label(config.num_labels, folder)
    try:
        return AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code,
                                                                  use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise HoneError(f"could not load the reward model in {folder}: {str(exc).splitlines()[0]}", TRAINED_FIX) from None


def _load_adapter(folder: Path, base: str | None, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoModelForSequenceClassification

    import_adapter_libraries()
    from peft import PeftModel

    settings = json.loads((folder / ADAPTER_CONFIG).read_text())
    if settings.get("task_type") != "SEQ_CLS":
        raise HoneError(f"{folder} holds a {settings.get('task_type') or 'untyped'} adapter, not a reward model "
                        "(a SEQ_CLS adapter with its score head in modules_to_save)", TRAINED_FIX)
    if not any("score" in name for name in settings.get("modules_to_save") or []):
        raise HoneError(f"{folder}/{ADAPTER_CONFIG} saves no score head (modules_to_save lacks 'score')",
                        "save the reward head with the adapter: modules_to_save=['score']")
    base = base or settings.get("base_model_name_or_path")
    if not base:
        raise HoneError(f"{folder}/{ADAPTER_CONFIG} names no base model", "pass --base MODEL")
    source = resolve_model_path(base)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=dtype,
                                                                   trust_remote_code=trust_remote_code, use_safetensors=True)
        return PeftModel.from_pretrained(model, folder), base, source
    except (OSError, ValueError, RuntimeError) as exc:
        raise HoneError(f"could not load the reward adapter {folder} over {base}: {str(exc).splitlines()[0]}",
                        "check the base model (--base MODEL) is the one the adapter was trained on") from None


def _require_one_label(num_labels: int, folder: Path) -> None:
    if num_labels != 1:
        raise HoneError(f"{folder} is a classifier with {num_labels} labels; a reward model has one score",
                        TRAINED_FIX)


def _load_tokenizer(folder: Path, fallback, trust_remote_code: bool):
    """The folder's own tokenizer (a hone run saves the one it trained with), else the base's."""
    from transformers import AutoTokenizer

    source = folder if (folder / "tokenizer_config.json").is_file() else fallback
    tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---- scoring --------------------------------------------------------------------------------

def answer_ids(tokenizer, example: Example, answer: list[dict] | str) -> list[int]:
    """Ids of the example's prompt followed by `answer` (turns, or the text of one answer)."""
    if example.kind == "completion":
        text = answer if isinstance(answer, str) else answer[-1].get("content") or ""
        return render_completion(tokenizer, example.prompt, text).input_ids
    prompt = prompt_turns(example)
    turns = [{"role": "assistant", "content": answer}] if isinstance(answer, str) else answer
    try:
        return render_answer(tokenizer, prompt, turns, example.tools or None).input_ids
    except RenderError:  # an answer the mask cannot align (odd generated text): the ids are all that is needed
        text = tokenizer.apply_chat_template(template_messages(prompt + turns), tokenize=False, tools=example.tools or None)
        return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_turns(example: Example) -> list[dict]:
    """The turns an answer responds to: a pair's or unpaired row's prompt, or a chat row's turns
    before its last assistant turn."""
    if example.kind in ("preference", "unpaired"):
        return example.messages
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    return example.messages[:last]


def model_parts(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder, score head) of a `*ForSequenceClassification`, under a PEFT wrapper or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix), inner.score


@torch.inference_mode()
def rewards(reward: RewardModel, sequences: list[list[int]], batch_size: int = 8) -> list[float]:
    """The reward of each sequence: the score head on its last token (right-padded batches)."""
    decoder, head = model_parts(reward.model)
    pad_id = reward.tokenizer.pad_token_id
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths pad less
    out = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # B, T
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, index in enumerate(chunk):
            ids[row, : len(sequences[index])] = torch.tensor(sequences[index])
            mask[row, : len(sequences[index])] = 1
        hidden = decoder(input_ids=ids.to(reward.device), attention_mask=mask.to(reward.device)).last_hidden_state  # B, T, C
        last = hidden[torch.arange(len(chunk)), mask.sum(dim=1).to(reward.device) - 1]  # B, C
        scores = head(last).float()[:, 0]  # B
        for row, index in enumerate(chunk):
            out[index] = float(scores[row])
    return out


def score_answers(reward: RewardModel, examples: list[Example], answers: list[list[dict] | str],
                  batch_size: int = 8, max_length: int | None = None) -> list[float | None]:
    """The reward of each (example's prompt, answer); None where prompt + answer exceeds `max_length` tokens."""
    sequences = [answer_ids(reward.tokenizer, e, a) for e, a in zip(examples, answers)]
    fits = [i for i, s in enumerate(sequences) if max_length is None or len(s) <= max_length]
    scored = rewards(reward, [sequences[i] for i in fits], batch_size)
    out: list[float | None] = [None] * len(sequences)
    for index, value in zip(fits, scored):
        out[index] = value
    return out
