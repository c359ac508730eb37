"""The chat mask is derived from the template's own rendering; check it token by token."""

import pytest

from hone.data.formats import Example
from hone.data.render import IGNORE, render_completion, render_conversation, render_prompt
from tiny import CHATML, make_tokenizer

CHATML_GENERATION = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{% generation %}{{ m['content'] }}<|im_end|>{% endgeneration %}\n"
    "{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Zephyr-like: a default system prompt is injected when none is given.
ZEPHYR_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|system|>\nYou are a friendly bot.</s>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LLAMA3 = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Gemma-like: no system role, assistant is called "model".
GEMMA = (
    "<bos>{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
MISTRAL = (
    "<s>{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}</s>{% endif %}{% endfor %}"
)
TEMPLATES = {
    "chatml": (CHATML, "<|im_end|>", ()),
    "zephyr_default_system": (ZEPHYR_DEFAULT_SYSTEM, "</s>", ("<|system|>", "<|user|>", "<|assistant|>", "</s>")),
    "llama3": (LLAMA3, "<|eot_id|>", ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    "gemma": (GEMMA, "<end_of_turn>", ("<bos>", "<start_of_turn>", "<end_of_turn>")),
    "mistral": (MISTRAL, "</s>", ("<s>", "</s>", "[INST]", "[/INST]")),
}
CONVERSATION = [
    {"role": "user", "content": "hello there"},
    {"role": "assistant", "content": "yes the red cat"},
    {"role": "user", "content": "and the dog"},
    {"role": "assistant", "content": "blue dog sat"},
]


def trained_pieces(tokenizer, tokens):
    """Decode each maximal run of labelled tokens."""
    runs, current = [], []
    for token_id, label in zip(tokens.input_ids, tokens.labels):
        if label != IGNORE:
            assert label == token_id  # labels are the input ids themselves (the model shifts)
            current.append(token_id)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_only_assistant_turns_and_their_end_marker_are_trained(tmp_path, name):
    template, end, specials = TEMPLATES[name]
    tokenizer = make_tokenizer(tmp_path, template, extra_specials=specials)
    tokens = render_conversation(tokenizer, CONVERSATION)
    assert len(tokens.labels) == len(tokens.input_ids)
    assert trained_pieces(tokenizer, tokens) == [f"yes the red cat{end}", f"blue dog sat{end}"]
    # The token after the last trained one is not trained (e.g. the newline after <|im_end|>).
    full_text = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert tokenizer.decode(tokens.input_ids) == full_text


def test_mask_equals_template_generation_markers_token_by_token(tmp_path):
    tokenizer = make_tokenizer(tmp_path, CHATML_GENERATION)
    ours = render_conversation(tokenizer, CONVERSATION)
    theirs = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours.input_ids == list(theirs["input_ids"])
    assert [int(label != IGNORE) for label in ours.labels] == list(theirs["assistant_masks"])


def test_weight_zero_turn_is_not_trained(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    messages = [dict(m) for m in CONVERSATION]
    messages[1]["weight"] = 0
    tokens = render_conversation(tokenizer, messages)
    assert trained_pieces(tokenizer, tokens) == ["blue dog sat<|im_end|>"]


def test_system_and_user_tokens_never_trained(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    messages = [{"role": "system", "content": "the green fox"}] + CONVERSATION[:2]
    tokens = render_conversation(tokenizer, messages)
    assert trained_pieces(tokenizer, tokens) == ["yes the red cat<|im_end|>"]


def test_prompt_completion_trains_completion_and_eos(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    tokens = render_completion(tokenizer, "the cat sat on", " the mat")
    assert tokens.input_ids[-1] == tokenizer.eos_token_id
    assert trained_pieces(tokenizer, tokens) == [" the mat<|endoftext|>"]


def test_generation_prompt_ends_where_training_target_starts(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    example = Example("chat", messages=CONVERSATION[:2])
    prompt = render_prompt(tokenizer, example)
    full = render_conversation(tokenizer, CONVERSATION[:2])
    assert full.input_ids[: len(prompt)] == prompt
    assert full.labels[len(prompt) - 1] == IGNORE and full.labels[len(prompt)] != IGNORE
