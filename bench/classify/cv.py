"""Classifier benchmark: cross-validation on the development data, extra held-out files, throughput.

    .venv/bin/python bench/classify/cv.py [--folds 5] [--seed 0] [--heldout FILE]... [--skip-cv]
                                          [--throughput] [--matrix] [--json OUT]

Development data: every corpus classifier.yaml trains the model on
(policies/classifier/labelled_corpus.jsonl, dev_corpus.jsonl, extra_corpus.jsonl;
2,300 messages on 2026-11-23). bench/classify/heldout.jsonl is a blind set of
300 (see README.md): score it with --heldout, never tune on it. What is scored where:

* `model`      the n-gram model alone, k-fold CV over the development data,
               stratified by category x language: an honest figure;
* `vocabulary` the vocabulary alone. Its phrases were written after reading much
               of the development data: its figure is partly "seen";
* `blend`      what the engine runs (vocabulary + the model trained on the other
               folds, conformal sets calibrated on the other folds' out-of-fold
               scores); partly seen (the vocabulary). With it: the sets' coverage,
               mean size, share decided and precision, and the raw-vs-labelled
               verdict agreement through the engine (each message judged at
               2021-06-01 raw and with its true category);
* `--heldout FILE` (repeatable): messages never used for anything, in the corpus
               format (category, subject, body, channel, is_reply, attachments,
               language). Scored with the engine exactly as configured (model
               trained on all its training corpora): the honest figure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import load_policies  # noqa: E402
from engine.classifier import Classifier, ClassifierInput, classifier_for  # noqa: E402
from engine.classifier.statistical import CATEGORIES, NgramModel, fold_of, read_corpus  # noqa: E402

CLASSIFIER = ROOT / "policies" / "classifier"
CORPUS = CLASSIFIER / "labelled_corpus.jsonl"


def folds(rows: list[dict], k: int, seed: int) -> list[int]:
    """Fold of each row: stratified by (category, language), deterministic (the calibration's folds at seed 0)."""
    return fold_of(rows, k, seed)


def metrics(truth: list[str], pred: list[str]) -> dict:
    n = len(truth)
    acc = sum(t == p for t, p in zip(truth, pred)) / n if n else 0.0
    per = {}
    for c in CATEGORIES:
        tp = sum(t == c and p == c for t, p in zip(truth, pred))
        fp = sum(t != c and p == c for t, p in zip(truth, pred))
        fn = sum(t == c and p != c for t, p in zip(truth, pred))
        if tp + fp + fn == 0:
            continue
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per[c] = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    confusions = Counter((t, p) for t, p in zip(truth, pred) if t != p)
    return {"n": n, "accuracy": acc, "macro_f1": sum(per.values()) / len(per) if per else 0.0,
            "per_category_f1": per, "confusions": confusions.most_common()}


def decided(truth: list[str], results) -> dict:
    """The candidate sets' figures: coverage (the true category in the set), mean set size,
    how often the set is one category (decided) and how often a decided category is right."""
    n = len(results)
    conf = [(t, c) for t, c in zip(truth, results) if c.confident]
    unsure = [(t, c) for t, c in zip(truth, results) if not c.confident]
    def members(c):  # the set a verdict is judged under: the decided category, or the candidates
        return {c.category} if c.confident else {name for name, _ in c.candidates}

    covered = sum(t in members(c) for t, c in zip(truth, results))
    wrong = sum(t != c.category for t, c in conf)
    return {"n": n, "coverage": covered / n if n else 0.0,
            "mean_set_size": sum(len(members(c)) for c in results) / n if n else 0.0,
            "confident": len(conf), "confident_share": len(conf) / n if n else 0.0,
            "confident_wrong": wrong, "decided_precision": 1 - wrong / len(conf) if conf else 1.0,
            "confident_wrong_ids": [], "uncertain": len(unsure),
            "uncertain_truth_in_candidates": sum(t in {name for name, _ in c.candidates} for t, c in unsure),
            "mean_candidates_when_uncertain": sum(len(c.candidates) for _, c in unsure) / len(unsure) if unsure else 0.0}


def train(base: Classifier, rows: list[dict]) -> NgramModel:
    return base.train([ClassifierInput.from_corpus(r) for r in rows], [r["category"] for r in rows])


def development_rows(base: Classifier) -> list[dict]:
    """Every labelled message the classifier trains on (classifier.yaml `training`)."""
    return [r for path in base.config.training for r in read_corpus(path)]


def cross_validate(rows: list[dict], base: Classifier, k: int, seed: int, policies=None) -> dict:
    """Each fold scored by a model trained on the other folds; its conformal sets calibrated
    on the other folds' out-of-fold scores (no message calibrates its own set)."""
    fold = folds(rows, k, seed)
    items = [ClassifierInput.from_corpus(r) for r in rows]
    truth = [r["category"] for r in rows]
    pred = {"model": [None] * len(rows), "vocabulary": [None] * len(rows), "blend": [None] * len(rows)}
    blend_results = [None] * len(rows)
    vocab_only = base.with_model(None, calibration=())
    models, scores = [], [0.0] * len(rows)
    for f in range(k):
        model = train(base, [rows[i] for i in range(len(rows)) if fold[i] != f])
        models.append(model)
        scorer = base.with_model(model, calibration=())
        for i in (i for i in range(len(rows)) if fold[i] == f):
            probs = model.probabilities(base.reading(items[i])[2])
            pred["model"][i] = max(CATEGORIES, key=lambda c: probs[c])
            pred["vocabulary"][i] = vocab_only.probabilities(items[i])[2][0]
            scores[i] = 1.0 - scorer.probabilities(items[i])[0][truth[i]]
    blended = []
    for f in range(k):
        calibration = sorted(scores[i] for i in range(len(rows)) if fold[i] != f)
        blended.append(base.with_model(models[f], calibration=calibration))
        for i in (i for i in range(len(rows)) if fold[i] == f):
            blend_results[i] = blended[f].classify(items[i])
            pred["blend"][i] = blend_results[i].best
    out = {name: metrics(truth, p) for name, p in pred.items()}
    out["blend"]["decisions"] = decided(truth, blend_results)
    out["blend"]["decisions"]["confident_wrong_ids"] = [
        (rows[i].get("id"), truth[i], r.category) for i, r in enumerate(blend_results) if r.confident and r.category != truth[i]]
    if policies is not None:
        out["blend"]["verdicts"] = agreement(policies, base, rows, [blended[f] for f in fold])
    out["blend_predictions"] = pred["blend"]
    return out


AT = dt.datetime(2021, 6, 1, 10, tzinfo=dt.timezone.utc)  # under the 2020 guidelines


def verdict_record(i: int, row: dict, category):
    """A corpus message as a record sent at AT: with `category`, or raw (None). Its own buyer and order
    (no history between messages); the language given, so only the category is inferred."""
    from engine import Message

    return Message(message_id=f"m{i}", order_id=f"111-{i:07d}-0000001", buyer_id=f"B{i}", sent_at=AT,
                   delivered_at=AT - dt.timedelta(days=7), buyer_opted_out=False, channel=row.get("channel") or "email",
                   subject=row.get("subject") or "", body=row.get("body") or "",
                   reply_to=f"buyer-{i}" if row.get("is_reply") else None,
                   language=row.get("language"), buyer_language=row.get("language"), category=category,
                   attachments=[a if isinstance(a, dict) else {"name": f"file.{a}", "kind": a}
                                for a in row.get("attachments") or ()])


def agreement(policies, base: Classifier, rows: list[dict], classifiers: list[Classifier]) -> dict:
    """Each message judged through the engine raw (category inferred by classifiers[i]) and with
    its true category: how often the outcomes agree, are indeterminate, or differ (wrong)."""
    import engine.classifier as package
    from engine import judge_records

    labelled = judge_records(policies, [verdict_record(i, r, r["category"]) for i, r in enumerate(rows)])
    raw = [None] * len(rows)
    digest = base.config.digest
    saved = package._classifiers.get(digest)
    try:
        for clf in dict.fromkeys(classifiers):  # each distinct classifier judges its own messages
            package._classifiers[digest] = clf
            mine = [i for i, c in enumerate(classifiers) if c is clf]
            for i, v in zip(mine, judge_records(policies, [verdict_record(i, rows[i], None) for i in mine])):
                raw[i] = v
    finally:
        if saved is None:
            package._classifiers.pop(digest, None)
        else:
            package._classifiers[digest] = saved
    same = sum(r.outcome == l.outcome for r, l in zip(raw, labelled))
    indeterminate = sum(r.outcome.value == "indeterminate" != l.outcome.value for r, l in zip(raw, labelled))
    wrong = [(rows[i].get("id"), rows[i]["category"], l.outcome.value, r.outcome.value)
             for i, (r, l) in enumerate(zip(raw, labelled))
             if r.outcome != l.outcome and r.outcome.value != "indeterminate"]
    n = len(rows)
    return {"n": n, "agreement": same / n if n else 0.0, "indeterminate": indeterminate,
            "wrong": len(wrong), "wrong_ids": wrong}


def score_file(rows: list[dict], base: Classifier, policies=None) -> dict:
    """The engine as configured (and its vocabulary alone) on messages it never learned from."""
    items = [ClassifierInput.from_corpus(r) for r in rows]
    truth = [r["category"] for r in rows]
    results = [base.classify(i) for i in items]
    vocab_only = base.with_model(None, calibration=())
    vocab = [vocab_only.probabilities(i)[2][0] for i in items]
    out = {"engine": metrics(truth, [r.best for r in results]), "vocabulary": metrics(truth, vocab)}
    out["engine"]["decisions"] = decided(truth, results)
    out["engine"]["decisions"]["confident_wrong_ids"] = [
        (r.get("id"), t, c.category) for r, t, c in zip(rows, truth, results) if c.confident and c.category != t]
    if policies is not None:
        out["engine"]["verdicts"] = agreement(policies, base, rows, [base] * len(rows))
    return out


# Other exports' spellings of a record's channel (Amazon's Buyer-Seller Messaging is Seller Central's).
CHANNEL_ALIASES = {"buyer_seller_messaging": "seller_central"}
_IMAGE = (".png", ".jpg", ".jpeg", ".gif", ".webp")


def normalise(row: dict) -> dict:
    """A held-out line in the record's terms: a channel alias mapped, and an attachment given as
    a file name (not a kind) typed by its extension alone (image, else other), the same for the
    classifier and for the verdicts, so nothing is read from its name but what a record holds."""
    from engine.model import AttachmentKind, Channel

    kinds = {k.value for k in AttachmentKind}
    channel = CHANNEL_ALIASES.get(row.get("channel") or "email", row.get("channel") or "email")
    Channel(channel)  # an unknown channel is an error, not a guess
    attachments = []
    for a in row.get("attachments") or ():
        if isinstance(a, dict) or a in kinds:
            attachments.append(a)
        else:
            attachments.append({"name": a, "kind": "image" if a.lower().endswith(_IMAGE) else "other"})
    return {**row, "channel": channel, "attachments": attachments}


def overlap(rows: list[dict], training: list[dict]) -> int:
    """Messages of `rows` whose subject and body also occur in the training data (would be scored on seen text)."""
    seen = {(r.get("subject") or "", r.get("body") or "") for r in training}
    return sum((r.get("subject") or "", r.get("body") or "") in seen for r in rows)


def throughput(base: Classifier, rows: list[dict], policies) -> dict:
    """Messages per second, single process: classification, and `check` on labelled vs raw records."""
    import datetime as dt

    from engine import Message, judge_records

    items = [ClassifierInput.from_corpus(r) for r in rows]
    t = time.perf_counter()
    model = train(base, development_rows(base))
    train_s = time.perf_counter() - t
    rates_classify = {}
    for name, clf in (("vocabulary", base.with_model(None)), ("engine", base.with_model(model))):
        for i in items[:20]:
            clf.classify(i)
        t = time.perf_counter()
        for i in items:
            clf.classify(i)
        rates_classify[name] = len(items) / (time.perf_counter() - t)

    def record(i, r, raw):
        data = dict(message_id=f"m{i}", order_id=f"111-{i:07d}-0000001", buyer_id=f"B{i % 50}",
                    sent_at=dt.datetime(2021, 3, 1, 10, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i),
                    delivered_at=dt.datetime(2021, 2, 25, tzinfo=dt.timezone.utc), buyer_opted_out=i % 3 == 0,
                    channel=r["channel"], subject=r["subject"], body=r["body"], buyer_language=r["language"],
                    attachments=[{"name": f"f.{k}", "kind": k} for k in r["attachments"]])
        if not raw:
            data.update(category=r["category"], language=r["language"])
        return Message(**data)

    rates = {}
    for raw in (False, True):
        log = [record(i, r, raw) for i, r in enumerate(rows)]
        judge_records(policies, log[:20])  # compile rulesets, train the model, warm the language model
        t = time.perf_counter()
        judge_records(policies, log)
        rates["raw" if raw else "labelled"] = len(log) / (time.perf_counter() - t)
    return {"classify_vocabulary_msgs_per_s": rates_classify["vocabulary"],
            "classify_engine_msgs_per_s": rates_classify["engine"], "check_labelled_msgs_per_s": rates["labelled"],
            "check_raw_msgs_per_s": rates["raw"], "model_training_s": train_s}


def table(rows: list[dict]) -> str:
    langs = sorted({r.get("language") or "?" for r in rows})
    counts = Counter((r["category"], r.get("language") or "?") for r in rows)
    lines = ["| category | " + " | ".join(langs) + " | total |", "|---|" + "---:|" * (len(langs) + 1)]
    for c in CATEGORIES:
        cells = [str(counts[(c, lang)]) for lang in langs]
        lines.append(f"| `{c}` | " + " | ".join(cells) + f" | {sum(counts[(c, lang)] for lang in langs)} |")
    return "\n".join(lines)


def show(name: str, m: dict) -> str:
    worst = sorted(m["per_category_f1"].items(), key=lambda kv: (kv[1], kv[0]))[:3]
    conf = ", ".join(f"{t}→{p} ×{n}" for (t, p), n in m["confusions"][:5]) or "none"
    return (f"{name:<30} n={m['n']:<4} accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
            f"lowest F1: {', '.join(f'{c} {v:.2f}' for c, v in worst)}\n{'':<30} worst confusions: {conf}")


def show_decisions(d: dict, v: dict | None = None) -> str:
    wrong = "".join(f"\n{'':<32}{i}: {t} decided as {c}" for i, t, c in d["confident_wrong_ids"])
    text = (f"{'':<30} conformal sets: coverage {d['coverage']:.4f}, mean size {d['mean_set_size']:.2f}; "
            f"decided {d['confident']} ({d['confident_share']:.1%}), precision {d['decided_precision']:.4f} "
            f"({d['confident_wrong']} wrong){wrong}\n{'':<30} uncertain {d['uncertain']}: true category among the "
            f"candidates {d['uncertain_truth_in_candidates']}/{d['uncertain']}, "
            f"{d['mean_candidates_when_uncertain']:.1f} candidates on average")
    if v is not None:
        ids = "".join(f"\n{'':<32}{i}: {c}, labelled {l}, raw {r}" for i, c, l, r in v["wrong_ids"])
        text += (f"\n{'':<30} raw vs labelled verdicts ({AT.date()}): agree {v['agreement']:.2%}, "
                 f"indeterminate {v['indeterminate']}, wrong {v['wrong']}{ids}")
    return text


def confusion_matrix(truth: list[str], pred: list[str]) -> str:
    short = {c: c[:6] for c in CATEGORIES}
    head = " " * 28 + " ".join(f"{short[c]:>6}" for c in CATEGORIES)
    lines = [head]
    for t in CATEGORIES:
        row = [sum(1 for a, b in zip(truth, pred) if a == t and b == p) for p in CATEGORIES]
        lines.append(f"{t:<28}" + " ".join(f"{n:>6}" if n else f"{'.':>6}" for n in row))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=Path, action="append", default=[], metavar="FILE",
                    help="score a held-out file (corpus format) with the engine as configured; repeatable")
    ap.add_argument("--skip-cv", action="store_true", help="only the --heldout files (and --throughput)")
    ap.add_argument("--throughput", action="store_true")
    ap.add_argument("--matrix", action="store_true", help="print the blend's CV confusion matrix")
    ap.add_argument("--split-ids", metavar="PREFIX", action="append", default=[],
                    help="also print the blend's CV figures for the messages whose id starts with PREFIX "
                         "and for the rest (e.g. t5- for a set written for one boundary); repeatable")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    policies = load_policies(ROOT / "policies")
    base = classifier_for(policies)
    rows = development_rows(base)
    report: dict = {"development_size": len(rows), "classifier": base.config.label}
    if not args.skip_cv:
        print(f"development data (corpus + dev): {len(rows)} messages\n{table(rows)}\n")
        cv = cross_validate(rows, base, args.folds, args.seed, policies)
        report["cv"] = {k: v for k, v in cv.items() if k != "blend_predictions"}
        print(f"{args.folds}-fold cross-validation on the development data ({base.config.label}):")
        print(show("model (held out)", cv["model"]))
        print(show("vocabulary (seen)", cv["vocabulary"]))
        print(show("blend (vocabulary seen)", cv["blend"]))
        print(show_decisions(cv["blend"]["decisions"], cv["blend"].get("verdicts")))
        if args.matrix:
            print(confusion_matrix([r["category"] for r in rows], cv["blend_predictions"]))
        for prefix in args.split_ids:
            inside = [str(r.get("id", "")).startswith(prefix) for r in rows]
            for label, keep in ((f"blend, ids {prefix}*", True), (f"blend, other ids", False)):
                part = [i for i, flag in enumerate(inside) if flag == keep]
                figures = metrics([rows[i]["category"] for i in part], [cv["blend_predictions"][i] for i in part])
                report["cv"].setdefault("split", {})[label] = figures
                print(show(label, figures))
    training = rows
    for path in args.heldout:
        held = [normalise(r) for r in read_corpus(path)]
        seen = overlap(held, training)
        report.setdefault("heldout", {})[str(path)] = result = score_file(held, base, policies)
        result["seen_in_training"] = seen
        print(f"\nheld-out {path} ({len(held)} messages):\n{table(held)}")
        if seen:
            print(f"WARNING: {seen} of these messages are in the training corpora: not a held-out score")
        print(show("engine (as configured)", result["engine"]))
        print(show_decisions(result["engine"]["decisions"], result["engine"].get("verdicts")))
        print(show("vocabulary alone", result["vocabulary"]))
    if args.throughput:
        report["throughput"] = throughput(base, read_corpus(CORPUS), policies)
        print(f"\nthroughput (single process): {json.dumps({k: round(v, 1) for k, v in report['throughput'].items()})}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
