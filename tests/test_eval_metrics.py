"""Each answer metric on hand-made cases."""

import json

import pytest

from hone.errors import HoneError
from hone.eval import metrics as m


def test_exact_and_normalized_match():
    assert m.exact_match(" Paris ", "Paris") == 1.0
    assert m.exact_match("paris", "Paris") == 0.0
    assert m.normalized_exact_match("The Paris!", "paris") == 1.0
    assert m.normalize_text("  A quick,  brown fox. ") == "quick brown fox"


def test_token_f1():
    assert m.token_f1("the cat sat", "cat sat") == 1.0  # articles dropped
    # pred {cat, dog}, ref {cat, sat, mat}: precision 1/2, recall 1/3 -> F1 0.4
    assert m.token_f1("cat dog", "cat sat mat") == pytest.approx(0.4)
    assert m.token_f1("", "") == 1.0
    assert m.token_f1("x", "") == 0.0
    assert m.token_f1("dog", "cat") == 0.0


def test_rouge_l():
    # LCS of "a b c d" vs "a c d e" (articles aside: words x1..): use explicit tokens
    assert m.rouge_l("red green blue", "red blue") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert m.rouge_l("blue red", "red blue") == pytest.approx(0.5)  # LCS 1 of 2 each side
    assert m.rouge_l("same words here", "same words here") == 1.0
    assert m.rouge_l("", "something") == 0.0


def test_bleu_and_chrf_are_sacrebleu_on_a_unit_scale():
    import sacrebleu

    pred, ref = "the cat sat on the mat", "the cat sat on a mat"
    assert m.sentence_bleu(pred, ref) == pytest.approx(sacrebleu.sentence_bleu(pred, [ref]).score / 100)
    assert m.sentence_chrf(pred, ref) == pytest.approx(sacrebleu.sentence_chrf(pred, [ref]).score / 100)
    assert m.sentence_bleu(ref, ref) == pytest.approx(1.0)
    assert m.sentence_chrf(ref, ref) == pytest.approx(1.0)
    assert 0 < m.sentence_bleu(pred, ref) < 1
    scores = m.corpus_scores([ref, ref], [ref, ref])
    assert scores["corpus_bleu"] == pytest.approx(1.0) and scores["corpus_chrf"] == pytest.approx(1.0)


def test_json_validity_fields_and_fences():
    ref = json.dumps({"product": "router", "category": "billing", "urgency": "high"})
    good = '{"product": "router", "category": "billing ", "urgency": "low"}'
    scores = m.json_scores(good, ref, None)
    assert scores["json_valid"] == 1.0
    assert scores["field.product"] == 1.0 and scores["field.category"] == 1.0  # trailing space trimmed
    assert scores["field.urgency"] == 0.0
    assert scores["field_exact_match"] == pytest.approx(2 / 3)
    fenced = m.json_scores("```json\n" + ref + "\n```", ref, None)
    assert fenced["json_valid"] == 1.0 and fenced["field_exact_match"] == 1.0
    broken = m.json_scores('{"product": "router"', ref, None)
    assert broken["json_valid"] == 0.0 and broken["field_exact_match"] == 0.0
    not_object = m.json_scores("[1, 2]", ref, None)
    assert not_object["json_valid"] == 1.0 and not_object["field_exact_match"] == 0.0
    # A plain-text reference: JSON metrics do not apply.
    assert m.json_scores("hello", "world", None) == {"json_valid": None, "schema_valid": None, "field_exact_match": None}


def test_schema_compliance(tmp_path):
    schema = {"type": "object", "required": ["product", "urgency"],
              "properties": {"urgency": {"enum": ["low", "high"]}, "product": {"type": "string"}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    validator = m.load_schema_validator(str(path))
    ref = '{"product": "x", "urgency": "low"}'
    assert m.json_scores('{"product": "router", "urgency": "high"}', ref, validator)["schema_valid"] == 1.0
    assert m.json_scores('{"product": "router", "urgency": "soon"}', ref, validator)["schema_valid"] == 0.0
    assert m.json_scores('{"product": "router"}', ref, validator)["schema_valid"] == 0.0
    assert m.json_scores("not json", ref, validator)["schema_valid"] == 0.0
    with pytest.raises(HoneError, match="not found"):
        m.load_schema_validator(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text('{"type": 12}')
    with pytest.raises(HoneError, match="not a valid JSON schema"):
        m.load_schema_validator(str(tmp_path / "bad.json"))


def test_regex_empty_and_length():
    settings = m.build_settings(regex=r"[A-Z]{3}-\d+")
    assert m.score_example("ABC-12", "x", settings)["regex_match"] == 1.0
    assert m.score_example("ABC-12 extra", "x", settings)["regex_match"] == 0.0
    scores = m.score_example("  ", "ref", settings)
    assert scores["empty"] == 1.0 and scores["output_chars"] == 2.0
    assert m.score_example("ok", "ref", m.build_settings())["regex_match"] is None
    with pytest.raises(HoneError, match="regular expression"):
        m.build_settings(regex="([")


def test_custom_metric(tmp_path, monkeypatch):
    (tmp_path / "mymetrics.py").write_text(
        "def starts_same(p, r):\n    return float(p[:1] == r[:1])\n"
        "def several(p, r):\n    return {'len_p': len(p), 'len_r': len(r)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = m.build_settings(custom=["mymetrics:starts_same", "mymetrics:several"])
    scores = m.score_example("abc", "axe", settings)
    assert scores["starts_same"] == 1.0 and scores["len_p"] == 3.0 and scores["len_r"] == 3.0
    with pytest.raises(HoneError, match="module:function"):
        m.load_custom_metric("nocolon")
    with pytest.raises(HoneError, match="cannot import"):
        m.load_custom_metric("no_such_module_xyz:f")
    with pytest.raises(HoneError, match="has no function"):
        m.load_custom_metric("mymetrics:missing")


def test_mean_scores_skips_examples_where_a_metric_does_not_apply():
    means = m.mean_scores([{"a": 1.0, "b": None}, {"a": 0.0, "b": 0.5}, {"a": 0.5, "c": 1.0}])
    assert means == {"a": 0.5, "b": 0.5, "c": 1.0}
    assert m.mean_scores([{"a": None}]) == {"a": None}
