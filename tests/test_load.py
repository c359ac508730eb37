import json

import pytest
import torch

from hone.config import ModelArgs
from hone.errors import HoneError
from hone.model.load import load_model, load_tokenizer, pick_device, resolve_model_path
from tiny import make_model


def test_loads_safetensors_model_and_its_chat_template(tiny_llama):
    model = load_model(ModelArgs(path=str(tiny_llama), dtype="float32"))
    tokenizer = load_tokenizer(ModelArgs(path=str(tiny_llama)))
    assert model.config.model_type == "llama"
    assert next(model.parameters()).dtype == torch.float32
    assert "<|im_start|>" in tokenizer.chat_template


def test_pickle_checkpoint_is_refused_unless_allowed(tmp_path, tiny_llama):
    folder = tmp_path / "pickled"
    model = load_model(ModelArgs(path=str(tiny_llama), dtype="float32"))
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(HoneError) as info:
        load_model(ModelArgs(path=str(folder)))
    assert "pickle" in str(info.value) and "allow_pickle" in str(info.value)
    loaded = load_model(ModelArgs(path=str(folder), allow_pickle=True, dtype="float32"))
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_folder_without_weights_is_refused(tmp_path, tiny_llama):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_llama / "config.json").read_text())
    with pytest.raises(HoneError, match="no weights"):
        load_model(ModelArgs(path=str(folder)))


def test_missing_folder_and_file_path_are_clear_errors(tmp_path):
    with pytest.raises(HoneError, match="not found"):
        resolve_model_path(str(tmp_path / "nope"))
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(HoneError, match="is a file"):
        resolve_model_path(str(tmp_path / "f.txt"))


def test_hub_id_passes_through_untouched():
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu():
    with pytest.raises(HoneError, match="no CUDA GPU"):
        pick_device(ModelArgs(device="cuda"))


def test_remote_code_is_off_by_default(tmp_path):
    folder = make_model(tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "my_custom_arch"
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(HoneError, match="trust_remote_code"):
        load_model(ModelArgs(path=str(folder)))


def test_adapter_libraries_are_imported_with_the_hub_offline(monkeypatch):
    """bitsandbytes asks the hub for a kernel when imported on AVX512-BF16 CPUs: hone imports
    it (through PEFT) with the hub in offline mode, then puts the mode back."""
    import huggingface_hub.constants as hub

    import hone.model.offline as offline

    seen = []
    monkeypatch.setattr(offline.importlib, "import_module", lambda name: seen.append((name, hub.HF_HUB_OFFLINE)))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    offline.import_adapter_libraries.__wrapped__()
    assert seen == [("peft", True)] and hub.HF_HUB_OFFLINE is False
