"""Constrained decoding for `response_format: json_schema`: at each step, only the tokens that
keep the answer a valid prefix of a JSON document matching the schema may be sampled, and the
stop token only once the document is complete, so the answer always parses.

Written here rather than taken from a library (outlines, xgrammar, lm-format-enforcer) because
the supported subset is small (objects, enums/const, strings with min/maxLength, numbers,
integers, booleans, null, arrays), the automaton below is ~250 lines with no compiled
dependency, and every library that fits pins its own transformers/torch range.

The schema compiles to nodes; decoding state is an immutable stack of frames (tuples), so a
state is shared freely while the vocabulary trie is walked. `feed(stack, ch)` consumes one
character and returns the new stack, or None when `ch` cannot come next; `ch=None` means
"end of answer". Whitespace between tokens is allowed (up to MAX_WHITESPACE characters in a
row) so both compact and `json.dumps`-spaced output fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

MAX_WHITESPACE = 1
"""Whitespace characters allowed in a row between JSON tokens: one space (outlines' default too)
fits both compact and `json.dumps` output; more lets a sampling model drift into whitespace."""
MAX_NUMBER_DIGITS = 16
WHITESPACE = " "
ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples"}
KEYWORDS = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems"},
    "string": {"type", "minLength", "maxLength"},
    "number": {"type"}, "integer": {"type"}, "boolean": {"type"}, "null": {"type"},
}


class SchemaError(ValueError):
    """The schema uses something the constraint does not support; `path` locates it."""

    def __init__(self, message: str, path: str):
        super().__init__(f"{message} (at {path or 'the schema root'})")
        self.path = path


@dataclass(frozen=True, eq=False)
class Node:
    """One schema, compiled. `kind`: object, array, string, number, integer, literal."""

    kind: str
    literals: tuple[str, ...] = ()  # literal: the JSON texts allowed (enum, const, true/false, null)
    properties: dict = field(default_factory=dict)  # object: name -> Node, in schema order
    required: frozenset = frozenset()
    items: Node | None = None  # array
    min_count: int = 0  # array items / string characters
    max_count: int | None = None


def compile_schema(schema, path: str = "") -> Node:
    """Node for `schema`; SchemaError naming the keyword it does not support."""
    if not isinstance(schema, dict):
        raise SchemaError("a schema must be a JSON object", path)
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        if not isinstance(values, list) or not values:
            raise SchemaError("enum must be a non-empty list", path)
        extra = set(schema) - ANNOTATIONS - {"enum", "const", "type"}
        if extra:
            raise SchemaError(f"unsupported keyword {sorted(extra)[0]!r} beside enum", path)
        return Node("literal", literals=tuple(json.dumps(v, ensure_ascii=False) for v in values))
    kind = schema.get("type")
    if kind not in KEYWORDS:
        raise SchemaError(f"unsupported or missing type {kind!r} (supported: {', '.join(KEYWORDS)}, or enum)", path)
    extra = set(schema) - ANNOTATIONS - KEYWORDS[kind]
    if extra:
        raise SchemaError(f"unsupported keyword {sorted(extra)[0]!r} for type {kind}", path)
    if kind == "object":
        return _compile_object(schema, path)
    if kind == "array":
        if "items" not in schema:
            raise SchemaError("an array needs `items`", path)
        return Node("array", items=compile_schema(schema["items"], f"{path}.items".lstrip(".")),
                    min_count=int(schema.get("minItems", 0)), max_count=schema.get("maxItems"))
    if kind == "string":
        return Node("string", min_count=int(schema.get("minLength", 0)), max_count=schema.get("maxLength"))
    if kind in ("boolean", "null"):
        return Node("literal", literals=("true", "false") if kind == "boolean" else ("null",))
    return Node(kind)


def _compile_object(schema: dict, path: str) -> Node:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not properties:
        raise SchemaError("an object needs `properties` (free-form objects are not supported)", path)
    if schema.get("additionalProperties", False) not in (False,):
        raise SchemaError("additionalProperties must be false (only the listed properties can be generated)", path)
    required = schema.get("required", [])
    missing = [name for name in required if name not in properties]
    if missing:
        raise SchemaError(f"required property {missing[0]!r} is not in properties", path)
    nodes = {name: compile_schema(sub, f"{path}.properties.{name}".lstrip(".")) for name, sub in properties.items()}
    return Node("object", properties=nodes, required=frozenset(required))


# --- the automaton: frames are tuples whose first item names their kind -----------------------
# step(frame, ch) returns None (reject), ("r", frames) (ch consumed; frames replace the top),
# ("p", top, child) (push child, feed ch to it) or ("d", value, consumed) (the frame is done).

def start_frame(node: Node) -> tuple:
    if node.kind == "literal":
        return ("lit", node.literals, 0)
    if node.kind == "string":
        return ("str", node, 0, 0, 0)  # phase (0: before the quote), length, escape state
    if node.kind in ("number", "integer"):
        return ("num", node.kind == "integer", 0, 0)  # integer, phase, digits
    if node.kind == "object":
        return ("obj", node, 0, frozenset(), None, 0)  # phase, keys done, current key, whitespace run
    return ("arr", node, 0, 0, 0)  # phase, items, whitespace run


def _literal(frame, ch):
    _, candidates, pos = frame
    following = tuple(c for c in candidates if ch is not None and len(c) > pos and c[pos] == ch)
    if following:
        if all(len(c) == pos + 1 for c in following):
            return ("d", following[0], True)
        return ("r", (("lit", following, pos + 1),))
    complete = [c for c in candidates if len(c) == pos]
    return ("d", complete[0], False) if complete else None


def _string(frame, ch):
    _, node, phase, length, escape = frame
    if ch is None:
        return None
    if phase == 0:
        return ("r", (("str", node, 1, 0, 0),)) if ch == '"' else None
    room = node.max_count is None or length < node.max_count
    if escape == 1:  # after a backslash
        if ch == "u":
            return ("r", (("str", node, 1, length, 2),))
        return ("r", (("str", node, 1, length + 1, 0),)) if ch in '"\\/bfnrt' else None
    if escape >= 2:  # inside \uXXXX
        if ch not in "0123456789abcdefABCDEF":
            return None
        return ("r", (("str", node, 1, length + (escape == 5), 0 if escape == 5 else escape + 1),))
    if ch == '"':
        return ("d", None, True) if length >= node.min_count else None
    if ord(ch) < 0x20 or not room:
        return None
    return ("r", (("str", node, 1, length, 1),)) if ch == "\\" else ("r", (("str", node, 1, length + 1, 0),))


NUMBER_END = {2, 3, 5, 8}  # phases where a number may stop: 0, 12, 1.5, 1e5


def _number(frame, ch):
    _, integer, phase, digits = frame
    digit = ch is not None and ch in "0123456789"
    if digit and digits >= MAX_NUMBER_DIGITS:
        digit = False
    moves = {  # (phase, character class) -> next phase
        (0, "-"): 1, (0, "0"): 2, (0, "d"): 3, (1, "0"): 2, (1, "d"): 3, (3, "0"): 3, (3, "d"): 3,
        (2, "."): 4, (3, "."): 4, (4, "0"): 5, (4, "d"): 5, (5, "0"): 5, (5, "d"): 5,
        (2, "e"): 6, (3, "e"): 6, (5, "e"): 6, (6, "-"): 7, (6, "0"): 8, (6, "d"): 8, (7, "0"): 8, (7, "d"): 8,
        (8, "0"): 8, (8, "d"): 8,
    }
    cls = ("0" if ch == "0" else "d") if digit else ("e" if ch in ("e", "E") else ch) if ch is not None else None
    if cls == "+" and phase == 6:
        cls = "-"
    nxt = moves.get((phase, cls))
    if nxt is not None and not (integer and cls in (".", "e")):
        return ("r", (("num", integer, nxt, digits + digit),))
    return ("d", None, False) if phase in NUMBER_END else None


def _object(frame, ch):
    _, node, phase, done, key, spaces = frame
    remaining = [name for name in node.properties if name not in done]
    if ch is not None and ch in WHITESPACE and phase in (1, 2, 3, 4, 5) and spaces < MAX_WHITESPACE:
        return ("r", (("obj", node, phase, done, key, spaces + 1),))
    if phase == 0:
        return ("r", (("obj", node, 1, done, None, 0),)) if ch == "{" else None
    if phase in (1, 5) and ch == '"' and remaining:  # a key: one of the properties not yet written
        return ("p", ("obj", node, "key", done, None, 0), ("lit", tuple(json.dumps(n, ensure_ascii=False) for n in remaining), 0))
    if phase == 2:
        return ("r", (("obj", node, 3, done, key, 0),)) if ch == ":" else None
    if phase == 3 and ch is not None:
        return ("p", ("obj", node, "value", done, key, 0), start_frame(node.properties[key]))
    if phase in (1, 4) and ch == "}" and node.required <= done:
        return ("d", None, True)
    if phase == 4 and ch == "," and remaining:
        return ("r", (("obj", node, 5, done, None, 0),))
    return None


def _array(frame, ch):
    _, node, phase, count, spaces = frame
    if ch is not None and ch in WHITESPACE and phase in (1, 2, 3) and spaces < MAX_WHITESPACE:
        return ("r", (("arr", node, phase, count, spaces + 1),))
    room = node.max_count is None or count < node.max_count
    if phase == 0:
        return ("r", (("arr", node, 1, 0, 0),)) if ch == "[" else None
    if phase in (1, 2) and ch == "]" and count >= node.min_count:
        return ("d", None, True)
    if phase == 2 and ch == "," and room:
        return ("r", (("arr", node, 3, count, 0),))
    if phase in (1, 3) and ch is not None and room:
        return ("p", ("arr", node, "item", count, 0), start_frame(node.items))
    return None


def _root(frame, ch):
    _, node, phase = frame
    if phase == 0:
        return ("p", ("root", node, "value"), start_frame(node)) if ch is not None else None
    return ("r", (frame,)) if ch is None else None  # complete: only the end may follow


def _child_done(parent: tuple, value) -> tuple:
    """The parent frame once its child (a key, a value or an item) is complete."""
    kind = parent[0]
    if kind == "root":
        return ("root", parent[1], "done")
    if kind == "arr":
        return ("arr", parent[1], 2, parent[3] + 1, 0)
    _, node, phase, done, key, _ = parent
    if phase == "key":
        return ("obj", node, 2, done, json.loads(value), 0)
    return ("obj", node, 4, done | {key}, None, 0)


STEPS = {"lit": _literal, "str": _string, "num": _number, "obj": _object, "arr": _array, "root": _root}


def feed(stack: tuple, ch: str | None) -> tuple | None:
    """The stack after `ch` (None: the end of the answer), or None if `ch` cannot come next."""
    while stack:
        move = STEPS[stack[-1][0]](stack[-1], ch)
        if move is None:
            return None
        if move[0] == "r":
            return stack[:-1] + move[1]
        if move[0] == "p":
            stack = stack[:-1] + (move[1], move[2])
            continue
        _, value, consumed = move
        stack = stack[:-2] + (_child_done(stack[-2], value),)
        if consumed:
            return stack
    return None


def feed_text(stack: tuple | None, text: str) -> tuple | None:
    for ch in text:
        if stack is None:
            return None
        stack = feed(stack, ch)
    return stack


# --- the vocabulary side: which token ids keep the state alive ---------------------------------

class TokenIndex:
    """Every ordinary token's text in a character trie, built once per tokenizer. Tokens with no
    quote, backslash or control character ("plain") are kept apart: inside a free string each of
    them is allowed whenever its length fits, without walking the trie."""

    def __init__(self, tokenizer, vocab_size: int):
        texts = token_texts(tokenizer)
        self.vocab_size = vocab_size
        self.trie: dict = {}
        self.plain = torch.zeros(vocab_size, dtype=torch.bool)
        self.plain_length = torch.full((vocab_size,), 1 << 30)
        self.special_trie: dict = {}  # the non-plain tokens only
        for token_id, text in texts.items():
            if token_id >= vocab_size or not text or "\ufffd" in text:
                continue  # incomplete UTF-8 pieces never fit a character automaton
            _insert(self.trie, text, token_id)
            if '"' in text or "\\" in text or any(ord(c) < 0x20 for c in text):
                _insert(self.special_trie, text, token_id)
            else:
                self.plain[token_id] = True
                self.plain_length[token_id] = len(text)
        self.texts = texts

    def allowed(self, stack: tuple) -> torch.Tensor:
        """Bool mask over the vocabulary of tokens whose whole text `stack` accepts."""
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        top = stack[-1] if stack else None
        trie = self.trie
        if top is not None and top[0] == "str" and top[2] == 1 and top[4] == 0:  # inside a free string
            room = (top[1].max_count - top[3]) if top[1].max_count is not None else 1 << 29
            mask |= self.plain & (self.plain_length <= room)
            trie = self.special_trie
        ids: list[int] = []
        _walk(trie, stack, ids)
        if ids:
            mask[torch.tensor(ids)] = True
        return mask


def _insert(trie: dict, text: str, token_id: int) -> None:
    node = trie
    for ch in text:
        node = node.setdefault(ch, {})
    node.setdefault(None, []).append(token_id)


def _walk(trie: dict, stack: tuple, out: list[int]) -> None:
    for ch, child in trie.items():
        if ch is None:
            continue
        after = feed(stack, ch)
        if after is None:
            continue
        out.extend(child.get(None, ()))
        _walk(child, after, out)


def token_texts(tokenizer) -> dict[int, str]:
    """Each ordinary token's text as it appears inside decoded output. Decoding a token after an
    anchor token keeps the leading space that SentencePiece tokenizers drop from a lone token."""
    special = set(tokenizer.all_special_ids)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][:1]
    prefix = tokenizer.decode(anchor)
    texts = {}
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        text = tokenizer.decode(anchor + [token_id])
        texts[token_id] = text[len(prefix):] if text.startswith(prefix) else tokenizer.decode([token_id])
    return texts


class JsonConstraint:
    """One answer's constraint: the mask for the next token, then the token taken."""

    def __init__(self, node: Node, index: TokenIndex, stop_ids: list[int]):
        self.stack: tuple | None = (("root", node, 0),)
        self.index = index
        self.stop_ids = stop_ids

    def mask(self) -> torch.Tensor:
        mask = self.index.allowed(self.stack) if self.stack is not None else torch.zeros(self.index.vocab_size, dtype=torch.bool)
        if self.stack is not None and feed(self.stack, None) is not None:
            mask[self.stop_ids] = True  # the document is complete: the answer may end
        if not mask.any():  # nothing fits (a vocabulary without some character): end rather than emit junk
            mask[self.stop_ids] = True
        return mask

    def advance(self, token_id: int) -> None:
        if token_id in self.stop_ids or self.stack is None:
            return
        self.stack = feed_text(self.stack, self.index.texts.get(token_id, ""))
