"""Train hone's byte-level BPE tokenizer on the generated corpus.

Byte-level BPE (the GPT-2 scheme) can encode any text without unknown tokens, which
matters because users fine-tune the shipped base model on their own data. The special
tokens are added before training so they get the lowest ids, `<|endoftext|>` first.

Usage: python scripts/make_tokenizer.py [--corpus .../train.txt.gz] [--out .../base_model]
"""

import argparse
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ASSETS = Path(__file__).resolve().parent.parent / "src" / "hone" / "assets"
VOCAB_SIZE = 4096
EOS, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [EOS, IM_START, IM_END, PAD]  # ids 0, 1, 2, 3 in this order

# ChatML: one `<|im_start|>{role}\n{content}<|im_end|>\n` block per turn, no default system
# prompt. The {% generation %} markers let transformers return an assistant-token mask.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def training_texts(corpus: Path) -> Iterator[str]:
    """Yield documents with special tokens cut out, so BPE spends no merges on them."""
    splitter = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))
    with gzip.open(corpus, "rt", encoding="utf-8") as handle:
        for piece in splitter.split(handle.read()):
            if piece.strip():
                yield piece


def train_tokenizer(corpus: Path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False keeps decode(encode(text)) == text exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, never unknown
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_texts(corpus), trainer=trainer)
    return tokenizer


def wrap_for_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,  # decoding must give back the exact text
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ASSETS / "corpus" / "train.txt.gz")
    parser.add_argument("--out", type=Path, default=ASSETS / "base_model")
    args = parser.parse_args()
    hf_tokenizer = wrap_for_transformers(train_tokenizer(args.corpus))
    hf_tokenizer.save_pretrained(args.out)
    ids = {token: hf_tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    print(f"vocab size {len(hf_tokenizer)}, special token ids {ids} -> {args.out}")


if __name__ == "__main__":
    main()
