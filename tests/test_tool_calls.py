"""OpenAI function-calling rows: tools reach the template, the assistant's calls are trained,
tool results are not; a template that cannot render tools is a finding, never a traceback."""

from __future__ import annotations

import json

import pytest

from hone.cli import main
from hone.config import ModelArgs
from hone.data.check.fix import rejected_path
from hone.data.dataset import read_examples, tokenize_examples
from hone.data.formats import FormatError, to_example
from hone.data.render import RenderError, render_conversation, render_example, render_prompt
from hone.errors import HoneError
from hone.model.load import load_tokenizer
from test_render import trained_pieces
from tiny import CHATML, make_tokenizer

# Qwen2.5's tool-calling template, shortened: tools go into the system turn, calls into
# <tool_call> blocks of the assistant turn, results into a user turn of <tool_response>s.
QWEN_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' }}{{- tool_call.name }}{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}"
    "{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Knows tool calls but never looks at `tools`.
CALLS_ONLY = QWEN_TOOLS.replace("{%- if tools %}", "{%- if false %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def weather_row(city: str = "paris", temperature: int = 18) -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
    return {"messages": [
        {"role": "user", "content": f"what is the weather in {city}"},
        {"role": "assistant", "tool_calls": [call]},  # OpenAI omits `content` on a pure tool call
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"celsius": temperature})},
        {"role": "assistant", "content": f"it is {temperature} degrees in {city}"},
    ], "tools": TOOLS}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def qwen(tmp_path):
    return make_tokenizer(tmp_path / "qwen", QWEN_TOOLS)


@pytest.fixture(scope="module")
def embedded():
    return load_tokenizer(ModelArgs())


def test_function_calling_row_reads_as_chat_with_tools():
    example = to_example(weather_row())
    assert example.kind == "chat" and example.tools == TOOLS
    assert example.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("tools, message", [("get_weather", "'tools' must be a list"), ([{"type": "function"}], "tools[0]"),
                                            ([None], "tools[0]")])
def test_malformed_tools_are_schema_errors(tools, message):
    with pytest.raises(FormatError, match=message.replace("[", r"\[")):
        to_example({**weather_row(), "tools": tools})


def test_tool_call_id_must_be_a_string():
    row = weather_row()
    row["messages"][2]["tool_call_id"] = 7
    with pytest.raises(FormatError, match=r"messages\[2\]\.tool_call_id"):
        to_example(row)


def test_assistant_tool_calls_are_trained_and_tool_results_are_not(qwen):
    example = to_example(weather_row())
    tokens = render_example(qwen, example)
    assert trained_pieces(qwen, tokens) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "paris"}}\n</tool_call><|im_end|>',
        "it is 18 degrees in paris<|im_end|>",
    ]
    text = qwen.decode(tokens.input_ids)
    assert '"description": "the weather in a city"' in text  # the tools reached the template (untrained)
    assert '{"celsius": 18}' in text and not any("celsius" in piece for piece in trained_pieces(qwen, tokens))
    # OpenAI's JSON-string arguments are handed over as an object: rendered once, not double-encoded
    assert '\\"city\\"' not in text


def test_weight_zero_skips_the_tool_call_turn(qwen):
    row = weather_row()
    row["messages"][1]["weight"] = 0
    tokens = render_example(qwen, to_example(row))
    assert trained_pieces(qwen, tokens) == ["it is 18 degrees in paris<|im_end|>"]


def test_prompt_for_generation_carries_the_tools(qwen):
    example = to_example(weather_row())
    prompt = qwen.decode(render_prompt(qwen, example))
    assert prompt.startswith("<|im_start|>system\n# Tools") and prompt.endswith("</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_embedded_template_cannot_render_tool_calls_a_render_error(embedded):
    with pytest.raises(RenderError, match="cannot render tools or tool calls.*model.chat_template"):
        render_example(embedded, to_example(weather_row()))


def test_template_that_drops_tool_calls_is_refused(tmp_path):
    tokenizer = make_tokenizer(tmp_path, CHATML)  # renders `content` only: the call would silently vanish
    with pytest.raises(RenderError, match="drops assistant turn 1's tool call 'get_weather'"):
        render_conversation(tokenizer, to_example(weather_row()).messages)


def test_template_that_ignores_tools_is_refused(tmp_path):
    tokenizer = make_tokenizer(tmp_path, CALLS_ONLY)
    example = to_example(weather_row())
    with pytest.raises(RenderError, match="ignores `tools`"):
        render_example(tokenizer, example)
    assert render_conversation(tokenizer, example.messages).trained_tokens  # without tools it renders fine


def test_check_with_embedded_model_names_the_lines(tmp_path, capsys):
    path = write_rows(tmp_path / "tools.jsonl", [weather_row("paris"), weather_row("rome", 25)])
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:1: the chat template cannot render tools or tool calls" in out
    assert "render: 2 finding(s), 2 row(s)" in out and "Traceback" not in out


def test_check_with_a_tools_template_passes_and_fix_keeps_the_tools(tmp_path, qwen, capsys):
    path = write_rows(tmp_path / "tools.jsonl", [weather_row("paris"), weather_row("rome", 25)])
    out = tmp_path / "clean.jsonl"
    assert main(["check", str(path), "--model", str(tmp_path / "qwen"), "--fix", str(out)]) == 0
    assert "result: no errors" in capsys.readouterr().out
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["tools"] for row in kept] == [TOOLS, TOOLS] and rejected_path(out).read_text() == ""


def test_training_stops_with_one_line_naming_file_and_line(tmp_path, embedded):
    path = write_rows(tmp_path / "tools.jsonl", [weather_row()])
    with pytest.raises(HoneError) as info:
        tokenize_examples(embedded, read_examples(path).examples, 512, "drop")
    line = info.value.line()
    assert line.startswith(f"{path}:1: the chat template cannot render tools or tool calls") and "\n" not in line
