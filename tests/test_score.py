"""`hone score`: a reward model saved either way (a sequence-classification folder, or a SEQ_CLS
PEFT adapter over its base) rates answers exactly as transformers and PEFT compute them."""

import json

import pytest
import torch

from hone.cli import main
from hone.config import EvalArgs
from hone.data.formats import to_example
from hone.eval.compare import compare_models
from hone.eval.models import load_for_eval
from hone.eval.preference import pair_logprobs, preference_report
from hone.eval.score import answer_ids, auc, load_reward_model, rewards, score_examples, summarize_scores
from hone.model.offline import import_adapter_libraries

from eval_fixtures import general_text, make_adapter_run

import_adapter_libraries()  # PEFT (and bitsandbytes) imported with the hub offline, as hone does

PAIRS = [{"prompt": [{"role": "system", "content": "answer"}, {"role": "user", "content": f"the {w} cat sat"}],
          "chosen": [{"role": "assistant", "content": f"yes the {w} cat"}],
          "rejected": [{"role": "assistant", "content": "no" + " dog" * (i % 4)}]}
         for i, w in enumerate(["red", "blue", "green", "quick", "brown", "lazy"])]


@pytest.fixture(scope="module")
def full_reward(tiny_llama, tmp_path_factory):
    """A one-label sequence-classification model over the tiny Llama, saved as transformers saves it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("reward_full")
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=1)
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_reward(tiny_llama, tmp_path_factory):
    """A SEQ_CLS LoRA adapter (random, so it changes the scores) with its score head in modules_to_save."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("reward_adapter")
    torch.manual_seed(2)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=1)
    config = LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"],
                        init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(folder)
    return folder


def reference_rewards(model, sequences):
    """One sequence per forward through the library's own model: its pooled logit is the reward."""
    with torch.no_grad():
        return [float(model(input_ids=torch.tensor([s])).logits[0, 0]) for s in sequences]


def sequences_of(reward):
    examples = [to_example(p) for p in PAIRS]
    return [answer_ids(reward.tokenizer, e, side) for e in examples for side in (e.chosen, e.rejected)]


@pytest.fixture(scope="module")
def loaded_full(full_reward):
    return load_reward_model(str(full_reward))


def test_full_reward_model_scores_as_transformers_does(full_reward, loaded_full):
    from transformers import AutoModelForSequenceClassification

    reward = loaded_full
    assert reward.kind == "full" and reward.base is None
    sequences = sequences_of(reward)
    expected = reference_rewards(AutoModelForSequenceClassification.from_pretrained(full_reward).eval(), sequences)
    got = rewards(reward, sequences, batch_size=5)  # batches mix lengths: padding must not move the read position
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(round(v, 6) for v in got)) == len(got)  # every answer scored on its own


def test_adapter_reward_model_scores_as_peft_does(adapter_reward, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    reward = load_reward_model(str(adapter_reward))
    assert reward.kind == "adapter" and reward.base == str(tiny_llama)
    sequences = sequences_of(reward)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=1)
    reference = PeftModel.from_pretrained(base, adapter_reward).eval()
    expected = reference_rewards(reference, sequences)
    assert rewards(reward, sequences, batch_size=4) == pytest.approx(expected, abs=1e-5)
    with reference.disable_adapter():  # the bare base scores differently: the adapter is applied
        bare = reference_rewards(reference, sequences)
    assert max(abs(a - b) for a, b in zip(expected, bare)) > 1e-3


def test_pair_summary_counts_chosen_above_rejected(loaded_full):
    reward = loaded_full
    examples = [to_example(p, line=i + 1) for i, p in enumerate(PAIRS)]
    rows = score_examples(reward, examples, batch_size=3)
    margins = [r["chosen_reward"] - r["rejected_reward"] for r in rows]
    assert [r["margin"] for r in rows] == pytest.approx(margins)
    summary = summarize_scores(rows)
    assert summary["accuracy"] == sum(m > 0 for m in margins) / len(margins)
    assert summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"]
    too_long = score_examples(reward, examples, max_length=5)  # nothing fits: every side skipped, counted
    assert summarize_scores(too_long)["scored"] == 0


def test_auc_counts_ties_as_half():
    assert auc([3.0, 2.0], [1.0, 2.0]) == 0.875
    assert auc([1.0], []) is None


def test_score_command_writes_rows_and_summary(full_reward, adapter_reward, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    kto = tmp_path / "kto.jsonl"
    main(["convert", str(data), str(kto), "--to", "unpaired"])
    out, summary = tmp_path / "scores.jsonl", tmp_path / "summary.json"
    assert main(["score", str(full_reward), "--data", str(data), "--out", str(out), "--json", str(summary)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5, 6] and all("margin" in r for r in rows)
    assert json.loads(summary.read_text())["summary"]["pairs"] == 6
    assert main(["score", str(adapter_reward), "--data", str(kto)]) == 0
    printed = capsys.readouterr().out
    assert "chosen scored above rejected in" in printed and "AUC" in printed


def test_score_refuses_what_is_not_a_reward_model(tiny_llama, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(PAIRS[0]) + "\n")
    causal_adapter = tmp_path / "causal"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(task_type="CAUSAL_LM", r=2)).save_pretrained(causal_adapter)
    for folder, words in ((tiny_llama, "not a sequence-classification"), (causal_adapter, "CAUSAL_LM adapter, not a reward model"),
                          (tmp_path / "missing", "not found")):
        assert main(["score", str(folder), "--data", str(data)]) == 2
        assert words in capsys.readouterr().err


# ---- hone compare on preference pairs ---------------------------------------------------------

def test_preference_report_numbers():
    base = [(-10.0, -12.0, 5, 5), (-8.0, -6.0, 4, 4), (-9.0, -9.5, 3, 6), None]
    tuned = [(-11.0, -15.0, 5, 5), (-9.0, -8.5, 4, 4), (-9.5, -9.0, 3, 6), (-1.0, -2.0, 1, 1)]
    report = preference_report(base, tuned, beta=0.5, samples=200, seed=0)
    assert report["scored"] == 3 and report["pairs"] == 4  # the unscored pair is left out of both sides
    assert report["logp_accuracy"]["baseline"] == pytest.approx(2 / 3) and report["logp_accuracy"]["tuned"] == pytest.approx(1 / 3)
    # per token the third pair flips: -9 > -9.5 summed, but -9/3 < -9.5/6
    assert report["avg_logp_accuracy"]["baseline"] == pytest.approx(1 / 3)
    margins = [0.5 * ((-1) - (-3)), 0.5 * ((-1) - (-2.5)), 0.5 * ((-0.5) - 0.5)]  # beta * (chosen change - rejected change)
    assert report["implicit_reward"]["margin"] == pytest.approx(sum(margins) / 3)
    assert report["implicit_reward"]["accuracy"] == pytest.approx(2 / 3)
    assert report["chosen_falls_while_margin_rises"]  # chosen -0.83 nats on average, margin +0.67


def test_pair_logprobs_equal_the_models_own_log_softmax(tiny_llama):
    loaded = load_for_eval(str(tiny_llama), dtype="float32")
    pairs = [to_example(p) for p in PAIRS[:3]]
    got = pair_logprobs(loaded, pairs, batch_size=2)
    from hone.data.pairs import render_pair

    for example, (chosen, rejected, n_chosen, n_rejected) in zip(pairs, got):
        for sequence, value, count in zip(render_pair(loaded.tokenizer, example).sequences(), (chosen, rejected), (n_chosen, n_rejected)):
            ids, labels = torch.tensor([sequence.input_ids]), torch.tensor(sequence.labels[1:])
            with torch.no_grad():
                logps = loaded.model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            keep = labels != -100
            assert value == pytest.approx(float(logps[keep].gather(1, labels[keep, None]).sum()), abs=1e-4)
            assert count == int(keep.sum())


@pytest.mark.slow
def test_compare_on_pairs_reports_preference_accuracy_and_reward_win_rate(tiny_llama, full_reward, tmp_path):
    run = tmp_path / "run"
    make_adapter_run(tiny_llama, run)
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    args = EvalArgs(max_new_tokens=4, general=str(general_text(tmp_path / "general.txt.gz", n=10)), general_max_tokens=256,
                    reward_model=str(full_reward), bootstrap_samples=200)
    report = compare_models(None, str(run), str(data), tmp_path / "out", args)
    preference, win = report["preference"], report["reward_win_rate"]
    assert preference["scored"] == len(PAIRS) and report["data"]["examples"] == len(PAIRS)  # pairs generate as chat rows too
    assert report["forgetting"] is not None
    scores = win["per_example"]
    assert win["n"] == len(PAIRS) and win["tuned_wins"] == sum(t > b for b, t in zip(scores["baseline"], scores["tuned"]))
    assert win["ci_low"] <= win["win_rate"] <= win["ci_high"]
    assert any(line.startswith("Preference accuracy") for line in report["verdict"])
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Held-out preference pairs" in html and "Reward model" in html
