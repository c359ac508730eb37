"""An Ollama `Modelfile` beside the GGUF file: the chat template in Ollama's Go template
language, the stop tokens and the system prompt the run trained with.

A Jinja template is a program and Go templates are another language, so nothing is translated
line by line. Instead each known turn format (ChatML, Llama 3, Phi-3, Gemma) is a small table
entry that renders in Python and writes its Go template from the same strings; the run's own
template is rendered on probe conversations and the entry whose rendering is identical is
used. A template no entry reproduces (a default system prompt, dates, tool blocks) is refused
with the first difference, never approximated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hone.data.formats import Example
from hone.errors import HoneError
from hone.export.gguf_read import TemplateError, render_template


@dataclass(frozen=True)
class TurnFormat:
    name: str
    header: str
    """Text before a turn's content; `{role}` is the role's name in the format."""
    footer: str
    """Text after a turn's content (the end-of-turn token and what follows it)."""
    roles: dict = field(default_factory=dict)
    """Role names the format writes differently (Gemma's assistant is `model`)."""
    system: bool = True
    """The format has a system turn (Gemma's template refuses one)."""

    def head(self, role: str) -> str:
        return self.header.format(role=self.roles.get(role, role))

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        text = "".join(self.head(m["role"]) + m["content"] + self.footer for m in messages)
        return text + (self.head("assistant") if add_generation_prompt else "")

    def go_template(self) -> str:
        """The same rendering in Ollama's template language: Ollama passes the conversation as
        `.Messages` (the Modelfile's SYSTEM first) and expects the assistant header at the end."""
        heads = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{self.head(role)}'
                        for i, role in enumerate(("system", "assistant"))) + f'{{{{ else }}}}{self.head("user")}{{{{ end }}}}'
        return ("{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}"
                f"{heads}{{{{ .Content }}}}{self.footer}"
                f'{{{{ if and $last (ne .Role "assistant") }}}}{self.head("assistant")}{{{{ end }}}}{{{{ end }}}}')


FORMATS = [
    TurnFormat("chatml", "<|im_start|>{role}\n", "<|im_end|>\n"),
    TurnFormat("llama3", "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>"),
    TurnFormat("phi3", "<|{role}|>\n", "<|end|>\n"),
    TurnFormat("gemma", "<start_of_turn>{role}\n", "<end_of_turn>\n", roles={"assistant": "model"}, system=False),
]

PROBES = [
    ([{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi! How can I help?"},
      {"role": "user", "content": "Name a colour."}], True),
    ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], False),
    ([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Why?"}], True),
]


def match_format(template: str, bos: str, drop_bos: bool) -> TurnFormat:
    """The known format whose rendering equals the template's on every probe conversation."""
    differences = []
    for fmt in FORMATS:
        problem = _first_difference(fmt, template, bos, drop_bos)
        if problem is None:
            return fmt
        differences.append(f"{fmt.name}: {problem}")
    raise HoneError("the chat template cannot be translated to an Ollama template: it renders differently from "
                    f"every known turn format ({'; '.join(differences)})",
                    "pass --no-modelfile and give Ollama a TEMPLATE by hand, or train with a ChatML, Llama 3, Phi-3 or Gemma template")


def _first_difference(fmt: TurnFormat, template: str, bos: str, drop_bos: bool) -> str | None:
    for messages, generation in PROBES:
        has_system = any(m["role"] == "system" for m in messages)
        try:
            text = render_template(template, messages, generation, bos, "")
        except TemplateError as exc:
            if has_system and not fmt.system:
                continue  # the template refuses a system turn, as the format does
            return f"the template fails on a probe ({exc})"
        if drop_bos and bos and text.startswith(bos):
            text = text[len(bos):]  # the tokenizer adds BOS itself, in Ollama as in llama.cpp
        if has_system and not fmt.system:
            return "the template accepts a system turn the format has not"
        expected = fmt.render(messages, generation)
        if text != expected:
            return f"renders {text[:60]!r} where the format renders {expected[:60]!r}"
    return None


def trained_system_prompt(examples: list[Example]) -> tuple[str | None, str]:
    """The system prompt the run trained with: the one every conversation that has one shares,
    when at least half have it. Returns (prompt or None, why)."""
    chats = [e for e in examples if e.kind == "chat"]
    firsts = Counter(e.messages[0]["content"] for e in chats if e.messages and e.messages[0]["role"] == "system")
    if not firsts:
        return None, "the training conversations have no system prompt"
    if len(firsts) > 1:
        return None, f"the training conversations use {len(firsts)} different system prompts: none is the default"
    prompt, count = firsts.most_common(1)[0]
    if count * 2 < len(chats):
        return None, f"only {count} of {len(chats)} training conversations have a system prompt"
    return prompt, f"every one of the {count} training conversations with a system prompt uses it"


def quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise HoneError(f'the {what} contains """, which ends a Modelfile block', "pass --no-modelfile and write it by hand")
    return f'"""{text}"""'


def modelfile_text(gguf_name: str, fmt: TurnFormat, stops: list[str], system: str | None) -> str:
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {quoted(fmt.go_template(), 'chat template')}"]
    if system:
        lines.append(f"SYSTEM {quoted(system, 'system prompt')}")
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    return "\n".join(lines) + "\n"


def read_stops(text: str) -> list[str]:
    """The stop strings of a Modelfile, read back for the parity check."""
    prefix = 'PARAMETER stop "'
    return [line[len(prefix):-1] for line in text.splitlines() if line.startswith(prefix) and line.endswith('"')]
