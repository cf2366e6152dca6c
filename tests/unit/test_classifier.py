"""The classifier: its data files, scoring, conformal candidate sets, inference in the Judge, language detection, classify CLI."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from engine import Judge, Message, judge_records, load_policies
from engine.classifier import ClassifierInput, classifier_for
from engine.classifier.statistical import read_corpus
from engine.classifier.vocabulary import phrase_regex
from engine.cli import main
from engine.policyfile import PolicyError

from ..conftest import POLICIES

CORPUS = POLICIES / "classifier" / "labelled_corpus.jsonl"
HELDOUT = POLICIES.parent / "bench" / "classify" / "heldout.jsonl"


@pytest.fixture(scope="module")
def clf(policies):
    return classifier_for(policies)


def _msg(**kw) -> Message:
    data = dict(message_id="M", order_id="111-0000001-0000001", buyer_id="B1",
                sent_at="2021-05-10T10:00:00-07:00", delivered_at="2021-05-01T10:00:00-07:00", buyer_opted_out=False)
    data.update(kw)
    return Message(**data)


# ---- data files: errors name file and field -------------------------------------------


def _copy(tmp_path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(POLICIES, root)
    return root


@pytest.mark.parametrize("edit,field,message", [
    (lambda d: d["categories"]["invoice"].update(signals={"colour": 1}), "categories.invoice.signals", "unknown feature"),
    (lambda d: d["categories"]["invoice"]["terms"].append({"weight": 1, "english": ["x"]}),
     "categories.invoice.terms.{n}", "language code"),
    (lambda d: d["categories"]["invoice"]["terms"].append({"weight": 1, "regex": ["(unclosed"]}),
     "categories.invoice.terms.{n}.regex", "does not compile"),
    (lambda d: d["categories"].pop("marketing"), "categories", "missing: marketing"),
    (lambda d: d["categories"]["invoice"]["terms"].append({"weight": "heavy", "en": ["x"]}),
     "categories.invoice.terms.{n}.weight", "number"),
])
def test_vocabulary_errors_name_file_and_field(tmp_path, edit, field, message):
    root = _copy(tmp_path)
    path = root / "classifier" / "vocabulary.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    appended = len(doc["categories"]["invoice"]["terms"])  # index of a term group the edit appends
    edit(doc)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(root)
    assert info.value.file == str(path)
    assert info.value.field == field.format(n=appended), str(info.value)
    assert message in str(info.value)


def test_settings_errors_name_file_and_field(tmp_path):
    root = _copy(tmp_path)
    path = root / "classifier" / "classifier.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["model"].update(enabled=True, training=["missing.jsonl"])
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(root)
    assert info.value.field == "model.training.0" and "missing.jsonl" in str(info.value)


def test_a_quote_opener_that_does_not_compile_names_its_field(tmp_path):
    root = _copy(tmp_path)
    path = root / "classifier" / "classifier.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["quoted_reply_starts"] = ["^On .* wrote:$", "(unclosed"]
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(root)
    assert info.value.file == str(path) and info.value.field == "quoted_reply_starts"
    assert "(unclosed" in str(info.value)


def test_phrase_regex_edges_stems_and_cjk():
    assert re.search(phrase_regex("rate us"), "please  rate\nus", re.I)
    assert not re.search(phrase_regex("rate"), "separate", re.I)
    assert re.search(phrase_regex("engrav*"), "the engraving text", re.I)
    assert not re.search(phrase_regex("engrav*"), "reengrave", re.I)
    assert re.search(phrase_regex("名入れ"), "ご注文の名入れ内容")
    assert [m.span() for m in re.finditer(phrase_regex("a review"), "a review, Ba review, (a  review")] == [(0, 8), (22, 31)]


def test_phrase_regex_matches_as_a_leading_word_edge_would(clf):
    """The word-edge assertion sits after the first letter (for speed); every phrase of the
    vocabulary finds the same spans as with the plain leading (?<!\\w), on every corpus text."""
    def plain(phrase: str) -> str:
        stem = phrase.endswith("*")
        body = r"\s+".join(re.escape(w) for w in phrase.rstrip("*").split())
        first, last = phrase[:1], phrase.rstrip("*")[-1:]
        start = r"(?<!\w)" if first.isascii() and first.isalnum() else ""
        end = "" if stem else (r"(?!\w)" if last.isascii() and last.isalnum() else "")
        return start + body + (r"\w*" if stem else "") + end

    phrases = sorted({p for cv in clf.config.vocabulary.categories.values() for g in cv.terms
                      for ps in g.phrases.values() for p in ps})
    texts = [ClassifierInput.from_corpus(r).text for r in read_corpus(CORPUS)[::6]]
    texts.append("xengraving a review (engraving) _engrave 9engrave é-engrave")
    for phrase in phrases:
        fast, slow = re.compile(phrase_regex(phrase), re.I), re.compile(plain(phrase), re.I)
        for text in texts:
            assert [m.span() for m in fast.finditer(text)] == [m.span() for m in slow.finditer(text)], phrase


# ---- classification ---------------------------------------------------------------------


def test_evidence_is_quoted_from_the_message(clf):
    for row in read_corpus(CORPUS)[::40]:
        item = ClassifierInput.from_corpus(row)
        result = clf.classify(item)
        text = " ".join(item.text.split()).lower()
        for e in result.evidence:
            if not e.startswith("feature "):
                assert e.lower() in text, (row["id"], e)


def test_prefiltered_scores_equal_trying_every_phrase(clf):
    """The scorer's literal prefilter only skips phrases that cannot match: same scores as brute force."""
    scorer = clf.scorer
    phrases = {}
    for category, cv in scorer.vocabulary.categories.items():
        first = {}  # a label counts once per category
        for group in cv.terms:
            for p in [p for ps in group.phrases.values() for p in ps]:
                first.setdefault(p, (re.compile(phrase_regex(p), re.I), group.weight))
            for p in group.regex:
                first.setdefault(p, (re.compile(p, re.I), group.weight))
        phrases[category.value] = (list(first.values()), cv.signals)
    for row in read_corpus(CORPUS):
        item = ClassifierInput.from_corpus(row)
        text, features = item.text, item.features()
        fast = scorer.score(text, features)
        for category, (compiled, signals) in phrases.items():
            total = sum(w for regex, w in compiled if regex.search(text))
            total += sum(w for name, w in signals.items() if name in features)
            assert fast[category].value == pytest.approx(total), (row["id"], category)


def test_candidates_are_the_conformal_set(clf):
    """Every category whose nonconformity (1 - p) is within the calibrated threshold, most
    probable first; decided exactly when that is one category."""
    threshold = clf.threshold()
    assert 0 < threshold < 1  # the shipped calibration; otherwise this tests nothing about the set
    sizes = set()
    for row in read_corpus(HELDOUT)[::2]:  # messages the model did not train on: not all decided
        item = ClassifierInput.from_corpus(row)
        result = clf.classify(item)
        probs, scores, _ = clf.probabilities(item)
        names = [c for c, _ in result.candidates]
        assert names[0] == result.best and 0 <= result.confidence <= 1
        if max(s.value for s in scores.values()) >= clf.settings.conformal.min_evidence:
            assert set(names) == ({c for c, p in probs.items() if 1 - p <= threshold + 1e-12} or set(probs))
        assert [probs[c] for c in names] == sorted((probs[c] for c in names), reverse=True)
        assert result.confident == (len(names) == 1) and (result.category == result.best) == result.confident
        sizes.add(min(len(names), 3))
    assert sizes == {1, 2, 3}  # decided, a pair, larger sets: all occur


def test_too_little_evidence_leaves_every_category_a_candidate(clf):
    item = ClassifierInput("Hello", "Hello.")
    _, scores, _ = clf.probabilities(item)
    assert max(s.value for s in scores.values()) < clf.settings.conformal.min_evidence
    ruled_out = {c for c, s in scores.items() if s.value < 0}
    assert ruled_out and {c for c, _ in clf.classify(item).candidates} == set(scores) - ruled_out
    lenient = clf.with_model(clf.model(), calibration=clf.calibration())
    lenient.settings = clf.settings.model_copy(
        update={"conformal": clf.settings.conformal.model_copy(update={"min_evidence": 0.0})})
    assert len(lenient.classify(item).candidates) < len(scores)


def test_own_text_leaves_out_what_the_buyer_wrote(clf):
    """The purpose is read from the seller's words: quoted lines, <blockquote>, everything
    after a quote opener (classifier.yaml) and a reply's subject are the buyer's."""
    reply = ClassifierInput(
        "Re: when will it ship?",
        "> When will my order ship?\nWhat text would you like engraved?\n\n"
        "On Mon, 3 Feb 2025 at 18:42, Ann Lee wrote:\nPlease tell me about returns.",
        has_reply_to=True)
    own = reply.own_text(clf._quote_starts)
    assert "engraved" in own
    assert "ship" not in own and "returns" not in own
    html = ClassifierInput("Your proof", "<p>Proof attached.</p><blockquote>Can I return it?</blockquote>")
    own = html.own_text(clf._quote_starts)
    assert "Your proof" in own and "Proof attached" in own and "return" not in own
    assert {"reply_to", "quoted_text", "reply_subject"} <= reply.features()  # still seen as a reply
    for opener in ("-----Original Message-----", "Am 12.03.2025 um 09:17 schrieb Kemal Yilmaz:",
                   "Le 3 mars 2025, Antoine a écrit :", "From: Ann Lee"):
        assert "later" not in ClassifierInput("", f"Ours.\n{opener}\nlater").own_text(clf._quote_starts)
    assert "later" in ClassifierInput("", "Ours.\nlater").own_text(clf._quote_starts)


def test_inference_sources_name_every_file_it_rests_on(clf):
    sources = clf.config.sources
    assert sources[:2] == ("policies/classifier/classifier.yaml", "policies/classifier/vocabulary.yaml")
    assert {f"policies/classifier/{p.name}" for p in clf.config.training} <= set(sources)


def test_editing_the_vocabulary_changes_the_classification(tmp_path, clf):
    """A compliance team corrects a misclassification by editing data, not code. (The shipped
    model and calibration are reused: an edited vocabulary would recompute them, which
    test_classifier_conformal.py covers with the model off.)"""
    root = _copy(tmp_path)
    item = ClassifierInput("Zorblax", "Zorblax quux.")
    before = clf.classify(item)
    assert not before.confident
    path = root / "classifier" / "vocabulary.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["categories"]["marketing"]["terms"].append({"weight": 15, "en": ["zorblax"]})
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    edited = classifier_for(load_policies(root)).with_model(clf.model(), calibration=clf.calibration())
    after = edited.classify(item)
    assert after.category == "marketing" and "Zorblax" in after.evidence


def test_language_detection(clf):
    assert clf.detect_language(_msg(subject="Ihre Rechnung", body="Guten Tag, anbei finden Sie die Rechnung."))[0] == "de"
    assert clf.detect_language(_msg(subject="", body=""))[0] is None


# ---- the Judge ----------------------------------------------------------------------------


def test_given_category_and_language_need_no_classifier(policies):
    judge = Judge(policies)
    m = _msg(category="invoice", language="en")
    effective, inference = judge.infer(m)
    assert effective is m and inference is None


def test_buyer_language_is_never_guessed(policies):
    effective, inference = Judge(policies).infer(_msg(subject="Hello", body="Would you leave a review?"))
    assert effective.buyer_language is None and inference.language is not None


def test_uncertain_category_enumerates_only_the_candidates(policies, clf):
    m = _msg(sent_at="2017-03-28T10:00:00-07:00", buyer_opted_out=True, channel="seller_central",
             subject="Additional Information Required",
             body="Hello, we need a quick answer from you about order 111-0000001-0000001 before we can continue.")
    result = clf.classify_message(m)
    assert not result.confident
    verdict = judge_records(policies, [m])[0]
    note = next(f for f in verdict.findings if f.rule == "INFER-CATEGORY")
    listed = re.findall(r"(\w+) \([\d.]+\) → (\w+)", note.reason)
    assert [c for c, _ in listed] == [c for c, _ in result.candidates]
    assert {o for _, o in listed} == {"allowed", "violation"} and verdict.outcome.value == "indeterminate"


def test_cached_and_uncached_verdicts_agree_on_raw_records(policies):
    rows = read_corpus(CORPUS)[::12]
    log = [_msg(message_id=f"m{i}", buyer_id=f"B{i}", order_id=f"111-{i:07d}-0000001", subject=r["subject"],
                body=r["body"], channel=r["channel"], buyer_opted_out=[True, False, None][i % 3])
           for i, r in enumerate(rows)]
    cached = judge_records(policies, log, cache=True)
    uncached = judge_records(policies, log, cache=False)
    assert [v.model_dump() for v in cached] == [v.model_dump() for v in uncached]


def test_no_classifier_is_an_input_error_naming_category(tmp_path):
    root = _copy(tmp_path)
    shutil.rmtree(root / "classifier")
    log = tmp_path / "raw.jsonl"
    log.write_text(json.dumps({"message_id": "M", "order_id": "1", "buyer_id": "B",
                               "sent_at": "2021-01-01T00:00:00+00:00", "body": "Hi"}) + "\n")
    result = CliRunner().invoke(main, ["check", str(log), "--policies", str(root)])
    assert result.exit_code == 2
    assert "message_id M" in result.stderr and "field 'category'" in result.stderr


# ---- classify command -----------------------------------------------------------------------


@pytest.fixture()
def raw_log(tmp_path) -> Path:
    path = tmp_path / "raw.jsonl"
    rows = [
        {"message_id": "R", "order_id": "1", "buyer_id": "B", "sent_at": "2021-01-01T00:00:00+00:00",
         "subject": "How is the kettle?", "body": "Would you leave a review of the kettle on Amazon?"},
        {"message_id": "X", "order_id": "1", "buyer_id": "B", "sent_at": "2021-01-01T00:00:00+00:00",
         "subject": "Hello", "body": "Hello."},
        {"message_id": "G", "order_id": "1", "buyer_id": "B", "sent_at": "2021-01-01T00:00:00+00:00",
         "body": "Anything", "category": "invoice", "language": "en"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_classify_json(raw_log):
    result = CliRunner().invoke(main, ["classify", str(raw_log), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {r["message_id"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["R"]["category"] == "review_request" and rows["R"]["source"] == "inferred"
    assert rows["R"]["language"] == "en" and rows["R"]["evidence"]
    assert rows["X"]["category"] is None and rows["X"]["source"] == "uncertain" and len(rows["X"]["alternatives"]) > 1
    assert rows["G"] == {**rows["G"], "category": "invoice", "source": "given", "language": "en", "confidence": 1.0}


def test_classify_csv_and_text(raw_log):
    csv_out = CliRunner().invoke(main, ["classify", str(raw_log), "--format", "csv"]).stdout.splitlines()
    assert csv_out[0] == "message_id,category,confidence,source,language,evidence,alternatives"
    assert csv_out[1].startswith("R,review_request,") and len(csv_out) == 4
    text = CliRunner().invoke(main, ["classify", str(raw_log)]).stdout
    assert "X  uncertain (best" in text and "alternatives:" in text


def test_classify_input_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"message_id": "M", "order_id": "1", "buyer_id": "B", "sent_at": "2021-01-01T00:00:00"}\n')
    result = CliRunner().invoke(main, ["classify", str(bad)])
    assert result.exit_code == 2 and "field 'sent_at'" in result.stderr


# ---- the n-gram model and the blend ---------------------------------------------------------


def test_model_margins_equal_sklearn(clf):
    """The per-message scoring path computes what sklearn's pipeline would."""
    import numpy as np
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    from engine.classifier.statistical import NgramModel

    rows = read_corpus(CORPUS)[::3]
    texts = [clf.reading(ClassifierInput.from_corpus(r))[2] for r in rows]
    labels = [r["category"] for r in rows]
    model = NgramModel(0.5, 4.0).fit(texts, labels)
    vectorizers = (
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2),
    )
    matrix = hstack([v.fit_transform(texts) for v in vectorizers]).tocsr()
    expected = LinearSVC(C=0.5, random_state=0).fit(matrix, labels).decision_function(matrix)
    got = np.array([model.margins(t) for t in texts])
    assert np.allclose(got, expected, atol=1e-9)


def test_batch_margins_are_the_ngram_counts_of_each_document(clf, small_model):
    """The batch scorer finds each document's known n-grams with the analyzers' counts (in
    code points over the whole batch), and a document scores the same alone and in a batch."""
    import math
    from collections import Counter

    import numpy as np

    model, documents = small_model
    documents = documents[:300] + ["", " ", "a", "ab", "  a\t\tb \n c  ", "Straße ÄÖÜ", "日本語のテキスト",
                                   "lone \ud800 surrogate", "\u2003em\u2003spaces\u00a0nbsp", "ΣΊΣΥΦΟΣ"]

    def expected(doc):  # the per-n-gram formula, term by term, as TfidfVectorizer defines it
        scores = model._intercept.copy()
        for analyze, columns, idf, coef in model._blocks:
            grams = {g: n for g, n in Counter(analyze(doc)).items() if g in columns}
            if grams:
                values = {g: (1 + math.log(n)) * idf[columns[g]] for g, n in grams.items()}
                norm = math.sqrt(sum(v * v for v in values.values()))
                scores = scores + sum(v / norm * coef[columns[g]] for g, v in values.items())
        return scores

    batch = model.margins_many(documents)
    assert np.allclose(batch, np.array([expected(d) for d in documents]), atol=1e-12)
    assert np.array_equal(batch, np.array([model.margins(d) for d in documents]))  # bit for bit


def test_analyzers_give_sklearns_ngrams(clf):
    """The model trains and scores with its own analyzers (no scikit-learn import to score):
    they give scikit-learn's n-grams, in its order, on every training document."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from engine.classifier.statistical import char_wb_ngrams, word_ngrams

    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b").build_analyzer()
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).build_analyzer()
    documents = [clf.reading(ClassifierInput.from_corpus(r))[2] for path in clf.config.training for r in read_corpus(path)]
    documents += ["", " ", "a", "ab", "  a\t\tb \n c  ", "Straße ÄÖÜ", "日本語のテキスト", "don't-stop 1-2 a_b"]
    assert len(documents) > 1500
    assert [word_ngrams(d) for d in documents] == [words(d) for d in documents]
    assert [char_wb_ngrams(d) for d in documents] == [chars(d) for d in documents]


# ---- the trained model's cache ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_model(clf):
    from engine.classifier.statistical import NgramModel

    rows = read_corpus(CORPUS)[::4]
    documents = [clf.reading(ClassifierInput.from_corpus(r))[2] for r in rows]
    return NgramModel(0.5, 4.0).fit(documents, [r["category"] for r in rows]), documents


def test_saved_model_scores_exactly_as_trained(tmp_path, clf, small_model):
    import numpy as np

    from engine.classifier.statistical import NgramModel

    model, documents = small_model
    model.save(tmp_path / "m.npz")
    loaded = NgramModel.load(tmp_path / "m.npz", 0.5, 4.0)
    documents = documents + [clf.reading(ClassifierInput.from_corpus(r))[2] for r in read_corpus(CORPUS)[1::4]]
    assert np.array_equal(np.array([loaded.margins(d) for d in documents]),
                          np.array([model.margins(d) for d in documents]))  # bit for bit
    # n-grams with edge spaces survive the round trip (numpy strips only NULs)
    assert any(t.endswith(" ") for t in loaded._blocks[1][1]) and loaded._blocks[1][1] == model._blocks[1][1]


class _Trainer:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self):
        self.calls += 1
        return self.model


def _config_variant(clf, digest):
    from engine.classifier.config import ClassifierConfig

    c = clf.config
    return ClassifierConfig(c.directory, c.settings, c.vocabulary, c.training, digest)


def test_model_cache_trains_once_then_loads(tmp_path, monkeypatch, clf, small_model):
    from engine.classifier.modelcache import cached_model

    model, documents = small_model
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", str(tmp_path / "cache"))
    trainer = _Trainer(model)
    first = cached_model(clf.config, trainer)
    second = cached_model(clf.config, trainer)
    assert trainer.calls == 1 and first is model and second is not model
    assert [second.margins(d) for d in documents[:50]] == [model.margins(d) for d in documents[:50]]
    # Anything the weights depend on (here: the classifier's files) names another file: trained anew.
    cached_model(_config_variant(clf, "another corpus"), trainer)
    assert trainer.calls == 2 and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_model_cache_replaces_a_damaged_file_and_keeps_the_newest(tmp_path, monkeypatch, clf, small_model):
    from engine.classifier import modelcache

    model, _ = small_model
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", str(tmp_path))
    trainer = _Trainer(model)
    modelcache.cached_model(clf.config, trainer)
    [path] = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    assert modelcache.cached_model(clf.config, trainer) is model and trainer.calls == 2
    assert modelcache.cached_model(clf.config, trainer) is not model and trainer.calls == 2
    for n in range(modelcache.KEEP + 2):
        modelcache.cached_model(_config_variant(clf, f"variant {n}"), trainer)
    kept = list(tmp_path.glob("*.npz"))
    assert len(kept) == modelcache.KEEP
    assert modelcache.cache_directory() / f"ngram-model-{modelcache.model_key(_config_variant(clf, 'variant 5'))}.npz" in kept
    assert not list(tmp_path.glob("*.tmp"))


def test_model_cache_off_or_unwritable_still_gives_the_model(tmp_path, monkeypatch, clf, small_model):
    from engine.classifier.modelcache import cached_model

    model, _ = small_model
    trainer = _Trainer(model)
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", "off")
    assert cached_model(clf.config, trainer) is model and cached_model(clf.config, trainer) is model
    assert trainer.calls == 2
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", str(blocker / "cache"))
    assert cached_model(clf.config, trainer) is model and trainer.calls == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is where Linux keeps caches")
def test_model_cache_lives_in_the_user_cache_directory_by_default(monkeypatch):
    from engine.classifier.modelcache import cache_directory

    monkeypatch.delenv("MSGPOLICY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert cache_directory() == Path("/somewhere/cache/msgpolicy")
    monkeypatch.setenv("MSGPOLICY_CACHE_DIR", "/elsewhere")
    assert cache_directory() == Path("/elsewhere")


class _Opinion:
    """A stand-in second opinion with fixed probabilities for a few categories (the rest share what is left)."""

    def __init__(self, **chosen):
        self.chosen = chosen

    def probabilities(self, document):
        from engine.classifier import CATEGORIES

        rest = (1 - sum(self.chosen.values())) / (len(CATEGORIES) - len(self.chosen))
        return {c: self.chosen.get(c, rest) for c in CATEGORIES}

    def probabilities_many(self, documents):
        return [self.probabilities(d) for d in documents]


def test_geometric_blend_averages_the_logarithms(clf):
    """p ∝ exp(((1 - w) log vocabulary + w log model) / T): a category the model rules out stays out
    however much the vocabulary likes it, and the blend is the product of experts it says it is."""
    import math

    from engine.classifier import CATEGORIES

    settings = clf.settings.model
    assert settings.blend == "geometric"
    item = ClassifierInput("Your invoice", "Hello, please find attached the invoice for order 111-0000001-0000001.",
                           attachments=("invoice",))
    vocabulary = clf.with_model(None, calibration=()).probabilities(item)[0]
    opinion = _Opinion(marketing=0.9, invoice=1e-9)
    blended = clf.with_model(opinion, calibration=clf.calibration()).probabilities(item)[0]
    second = opinion.probabilities("")
    w, t = settings.weight, settings.blend_temperature
    logs = {c: ((1 - w) * math.log(vocabulary[c] + 1e-12) + w * math.log(second[c] + 1e-12)) / t for c in CATEGORIES}
    total = sum(math.exp(v) for v in logs.values())
    assert blended == pytest.approx({c: math.exp(logs[c]) / total for c in CATEGORIES})
    assert vocabulary["invoice"] > 0.9 and blended["invoice"] < blended["marketing"]
