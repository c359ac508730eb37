"""GGUF export: llama.cpp's names and layouts for every family, the tokenizer and template read
back from the file alone, the Ollama Modelfile, and the parity check that guards them.

The tests marked slow run the files in llama.cpp itself (llama-cpp-python) and hold its
logits and greedy continuations to transformers'."""

import json

import gguf
import numpy as np
import pytest
import torch

from hone.cli import main
from hone.config import load_config, save_config
from hone.export import ollama
from hone.export.gguf_export import end_of_turn_id, export_gguf, write_gguf
from hone.export.gguf_model import FAMILIES, interleave_rows
from hone.export.gguf_read import RebuiltTokenizer, read_text_metadata
from hone.export.gguf_vocab import portable_template
from tiny import CHATML, make_chat_data, make_model, sample_text

TEXTS = ["<|im_start|>user\nthe cat sat on the mat<|im_end|>\n", "hello  world 42 json's  \n\n quick!", "ÿé 你好 red"]


def load_pair(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """One tiny model per family, with its tokenizer: {family: (folder, model, tokenizer)}."""
    root = tmp_path_factory.mktemp("families")
    return {family: (folder, *load_pair(folder)) for family in sorted(FAMILIES)
            for folder in [make_model(root / family, family, seed=1)]}


def make_run(root, family="llama"):
    """A LoRA run folder as `hone train` leaves it, with random (non-zero) adapter weights."""
    from peft import LoraConfig, get_peft_model

    base = make_model(root / "base", family)
    data = make_chat_data(root / "train.jsonl", n=24)
    model, tokenizer = load_pair(base)
    torch.manual_seed(0)
    adapted = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    run = root / "run"
    adapted.save_pretrained(run)
    tokenizer.save_pretrained(run)
    config = load_config(None, [f"model.path={base}", f"data.train={data}", f"train.output_dir={run}"])
    save_config(config, run / "config.yaml")
    return run


def test_rotary_pairs_survive_the_row_interleave():
    """transformers rotates halves of a head, llama.cpp's LLAMA graph adjacent pairs: after
    reordering q's rows, llama.cpp's rotation of the new rows is the reordered transformers one."""
    heads, d, pos = 2, 8, 3.0
    weight = torch.randn(heads * d, 5)
    x = torch.randn(5)
    freqs = 1.0 / 10000 ** (torch.arange(0, d, 2) / d)
    cos, sin = torch.cos(pos * freqs), torch.sin(pos * freqs)
    q = (weight @ x).view(heads, d)
    half = q[:, : d // 2], q[:, d // 2:]
    hf = torch.cat([half[0] * cos - half[1] * sin, half[1] * cos + half[0] * sin], dim=-1)
    p = (interleave_rows(weight, heads) @ x).view(heads, d // 2, 2)
    cpp = torch.stack([p[..., 0] * cos - p[..., 1] * sin, p[..., 1] * cos + p[..., 0] * sin], dim=-1).view(heads, d)
    order = torch.arange(d).view(2, d // 2).t().reshape(-1)
    torch.testing.assert_close(cpp, hf[:, order])
    assert not torch.equal(interleave_rows(weight, heads), weight)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_is_written_under_llama_cpp_names(tmp_path, families, family):
    folder, model, tokenizer = families[family]
    path = tmp_path / "m.gguf"
    write_gguf(path, model, tokenizer, "f32", end_of_turn_id(tokenizer), family)
    reader = gguf.GGUFReader(path)
    arch = FAMILIES[family].arch
    assert reader.get_field("general.architecture").contents() == gguf.MODEL_ARCH_NAMES[arch]
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) + suffix for t in gguf.MODEL_TENSORS[arch]
               for b in range(model.config.num_hidden_layers) for suffix in (".weight", ".bias")}
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) <= allowed
    tied = model.config.tie_word_embeddings
    assert len(tensors) == len(model.state_dict()) - tied and ("output.weight" in tensors) != tied
    state = model.state_dict()
    embed = np.asarray(tensors["token_embd.weight"].data)
    np.testing.assert_array_equal(embed, state["model.embed_tokens.weight"].numpy())
    norm = np.asarray(tensors["output_norm.weight"].data)
    np.testing.assert_allclose(norm, state["model.norm.weight"].numpy() + FAMILIES[family].norm_offset)
    if "blk.0.attn_q.weight" in tensors:  # Phi-3 fuses q, k, v into attn_qkv
        q = state["model.layers.0.self_attn.q_proj.weight"]
        expected = interleave_rows(q, model.config.num_attention_heads) if FAMILIES[family].interleave_rotary else q
        np.testing.assert_array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data), expected.numpy())


def test_quantized_types_stay_close_to_the_weights(tmp_path, families):
    _, model, tokenizer = families["llama"]
    weight = model.state_dict()["model.layers.0.mlp.down_proj.weight"].numpy()
    for file_type, qtype, tolerance in (("q8_0", gguf.GGMLQuantizationType.Q8_0, 0.01),
                                        ("bf16", gguf.GGMLQuantizationType.BF16, 0.005),
                                        ("f16", gguf.GGMLQuantizationType.F16, 0.001)):
        path = tmp_path / f"{file_type}.gguf"
        counts = write_gguf(path, model, tokenizer, file_type, None, "llama")
        assert counts[qtype.name] == 15 and counts["F32"] == 5  # matrices quantized, norms kept in f32
        stored = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.ffn_down.weight")
        assert stored.tensor_type == qtype
        back = gguf.quants.dequantize(np.asarray(stored.data), qtype).reshape(weight.shape)
        relative = np.abs(back - weight).max() / np.abs(weight).max()
        assert 0 < relative < tolerance if file_type != "f16" else relative < tolerance


def test_the_vocabulary_read_back_tokenizes_as_transformers(tmp_path, families):
    _, model, tokenizer = families["qwen2"]
    path = tmp_path / "m.gguf"
    write_gguf(path, model, tokenizer, "f16", end_of_turn_id(tokenizer), "qwen2")
    meta = read_text_metadata(path)
    # transformers loads a Qwen2 model's tokenizer as Qwen2Tokenizer, which cuts with Qwen2's expression
    assert meta.pre == "qwen2" and len(meta.tokens) == model.config.vocab_size and not meta.add_bos
    assert meta.ids["eos"] == tokenizer.eos_token_id and meta.ids["eot"] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert meta.chat_template == CHATML
    rebuilt = RebuiltTokenizer(meta)
    for text in TEXTS + sample_text(40, seed=3):
        assert rebuilt.encode(text, add_special=True) == tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_generation_blocks_become_an_equivalent_if():
    template = "{%- for m in messages -%}{%- generation -%}{{ m['content'] }}{% endgeneration %} {% endfor %}"
    portable = portable_template(template)
    assert "generation" not in portable and "{%- if true -%}" in portable and "{% endif %}" in portable


TEMPLATES = {
    "chatml": CHATML,
    "llama3": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
               "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
    "phi3": ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
    "gemma": ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
              "{% endif %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}<start_of_turn>{{ role }}\n"
              "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_known_chat_templates_get_their_ollama_template(name):
    fmt = ollama.match_format(TEMPLATES[name], "<|begin_of_text|>", drop_bos=name == "llama3")
    assert fmt.name == name
    text = ollama.modelfile_text("m.gguf", fmt, ["<|x|>"], "Be brief." if fmt.system else None)
    assert text.startswith("FROM ./m.gguf\nTEMPLATE \"\"\"{{- range") and 'PARAMETER stop "<|x|>"' in text
    assert fmt.head("assistant") in fmt.go_template() and "{{ .Content }}" + fmt.footer in fmt.go_template()


def test_an_untranslatable_template_is_refused_with_the_difference():
    default_system = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
                      + CHATML)
    with pytest.raises(Exception) as refused:
        ollama.match_format(default_system, "", drop_bos=False)
    assert "cannot be translated" in str(refused.value) and "You are helpful" in str(refused.value)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


def test_export_writes_gguf_modelfile_and_a_passing_parity_report(tmp_path, capsys, run):
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", "gguf", "--out", str(out), "--gguf-type", "q8_0"]) == 0
    printed = capsys.readouterr().out
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] and parity["conversations_checked"] == 24 == parity["conversations_identical"]
    assert "parity: 24/24 conversations" in printed and ": passed" in printed
    assert [t["text"] for t in parity["stop"]["taught"]] == ["<|im_end|>"]
    modelfile = (out / "Modelfile").read_text()
    assert 'SYSTEM """repeat the first word"""' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert (out / "run-q8_0.gguf").is_file()


def test_parity_fails_the_export_when_the_file_would_talk_differently(tmp_path, capsys, monkeypatch, run):
    """A GGUF whose template renders a different turn header tokenizes every conversation
    differently: the export fails, names the difference and keeps the report."""
    from hone.export import gguf_vocab

    monkeypatch.setattr(gguf_vocab, "portable_template", lambda t: t.replace("<|im_start|>{{ m['role'] }}\n", "<|im_start|>{{ m['role'] }}:\n"))
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", "gguf", "--out", str(out), "--no-modelfile"]) == 2
    err = capsys.readouterr().err
    assert "does not tokenize as training did: 24 conversations tokenize differently" in err
    report = json.loads((out / "parity.json").read_text())
    assert not report["passed"] and report["mismatches"][0]["training"] != report["mismatches"][0]["gguf"]


def test_bad_requests_end_in_one_line(tmp_path, capsys, monkeypatch, run):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["export", str(run), "--format", "gguf", "--out", str(tmp_path / "k"), "--gguf-type", "q4_k_m"]) == 2
    assert "needs llama.cpp's llama-quantize on PATH" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "gguf", "--out", str(tmp_path / "x"), "--gguf-type", "q3"]) == 2
    assert "unknown --gguf-type q3" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "gguf", "--out", str(tmp_path / "y")]) == 2
    assert "is not a hone run folder" in capsys.readouterr().err


def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install -e '.[llamacpp]')")


@pytest.mark.slow
def test_llama_cpp_computes_what_transformers_computes_for_every_family(tmp_path, families):
    """Each family's f32 file in llama.cpp: next-token logits equal transformers' and greedy
    continuations are the same tokens; llama.cpp's own tokenizer agrees with the parity check's."""
    llama_cpp = _llama_cpp()
    for family, (_, model, tokenizer) in families.items():
        path = tmp_path / f"{family}.gguf"
        # not the family as general.name: llama.cpp gives special tokens Phi-3's whitespace
        # stripping when the name says phi3, which these tokenizers do not do
        write_gguf(path, model, tokenizer, "f32", end_of_turn_id(tokenizer), "tiny")
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False, seed=0)
        prompt = tokenizer("<|im_start|>user\nthe quick brown fox<|im_end|>\n", add_special_tokens=False)["input_ids"]
        assert llm.tokenize("<|im_start|>user\nthe quick brown fox<|im_end|>\n".encode(), add_bos=True, special=True) == prompt
        llm.eval(prompt)
        ours = torch.tensor(np.array(llm.scores[: len(prompt)]))
        with torch.no_grad():
            theirs = model(torch.tensor([prompt])).logits[0]
        torch.testing.assert_close(ours, theirs, atol=5e-4, rtol=0, msg=family)  # right: ~1.5e-4; q/k rows not reordered: 5e-3
        with torch.no_grad():
            greedy = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                                    pad_token_id=3)[0, len(prompt):].tolist()
        llm.reset()
        assert _greedy(llm, prompt, 12) == greedy, family


def _greedy(llm, prompt, count):
    out = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        out.append(token)
        if len(out) == count:
            return out
    return out


@pytest.mark.slow
def test_parity_with_llama_cpps_own_tokenizer_on_a_run(tmp_path):
    _llama_cpp()
    run = make_run(tmp_path, "qwen2")
    result = export_gguf(run, tmp_path / "out", "f16", engine="llama.cpp")
    assert result.parity.passed and result.parity.tokenizer.startswith("llama.cpp")
    assert {t["text"] for t in result.parity.stop["gguf_stops"]} == {"<|endoftext|>", "<|im_end|>"}
