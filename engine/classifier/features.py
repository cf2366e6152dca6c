"""What the classifier reads of a message: its text and a few generic features.

The same reduction serves a record (engine.model.Message) and a labelled-corpus line, so
the benchmark scores exactly what the engine sees.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Optional

from ..detectors import body_text

_QUOTED = re.compile(r"(?m)^[ \t]*(?:>|&gt;)|<blockquote\b", re.I)
_BLOCKQUOTE = re.compile(r"<blockquote\b.*?</blockquote\s*>", re.I | re.S)
_QUOTED_LINE = re.compile(r"(?m)^[ \t]*>.*$")
# Reply prefixes of common mail clients: Re, AW (de), SV (sv/da), Rif/R (it), RE, Rép (fr), RV/RES (es).
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|sv|rif|r|rép|res|rv)\s*(?:\[\d+\])?\s*:", re.I)
_ORDER_ID = re.compile(r"(?<![\d-])\d{3}-\d{7}-\d{7}(?![\d-])")
_WORD = re.compile(r"[^\W\d_]+", re.U)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")

# Message size in words (CJK: two characters count as one word).
SHORT_WORDS, LONG_WORDS = 45, 120


@dataclass(frozen=True)
class ClassifierInput:
    subject: str
    body: str
    channel: str = "email"
    has_reply_to: bool = False
    attachments: tuple[str, ...] = ()

    @classmethod
    def from_message(cls, message) -> "ClassifierInput":
        return cls(message.subject, message.body, message.channel.value, message.reply_to is not None,
                   tuple(a.kind.value for a in message.attachments))

    @classmethod
    def from_corpus(cls, row: dict) -> "ClassifierInput":
        kinds = tuple(a if isinstance(a, str) else a["kind"] for a in row.get("attachments") or ())
        return cls(row.get("subject") or "", row.get("body") or "", row.get("channel") or "email",
                   bool(row.get("is_reply") or row.get("reply_to")), kinds)

    @cached_property
    def readable_body(self) -> str:
        """The body as text (HTML reduced to its text), computed once."""
        return body_text(self.body)

    @property
    def text(self) -> str:
        """Subject and readable body: the whole message as text."""
        return self.subject + "\n" + self.readable_body

    def own_text(self, quote_starts: Optional[re.Pattern] = None) -> str:
        """The seller's own words, which tell the message's purpose: `text` without the
        buyer's words a reply carries (`>` lines, <blockquote>, everything from a line
        matching `quote_starts` on) and, on a reply, without the subject (the buyer's topic)."""
        quoted_html = "<" in self.body and _BLOCKQUOTE.search(self.body)
        body = body_text(_BLOCKQUOTE.sub("\n", self.body)) if quoted_html else self.readable_body
        if quote_starts is not None:
            start = quote_starts.search(body)
            if start:
                body = body[:start.start()]
        subject = "" if _REPLY_SUBJECT.search(self.subject) else self.subject
        return subject + "\n" + _QUOTED_LINE.sub("", body)

    def features(self, text: Optional[str] = None) -> set[str]:
        text = self.text if text is None else text
        found = {f"channel:{self.channel}"}
        found.update(f"attachment:{k}" for k in self.attachments)
        quoted = bool(_QUOTED.search(self.body))
        if self.has_reply_to:
            found.add("reply_to")
        if quoted:
            found.add("quoted_text")
        if _REPLY_SUBJECT.search(self.subject):
            found.add("reply_subject")
        if not self.has_reply_to and not quoted:
            found.add("proactive")
        if _ORDER_ID.search(text):
            found.add("order_id")
        words = word_count(text)
        if words <= SHORT_WORDS:
            found.add("short")
        elif words >= LONG_WORDS:
            found.add("long")
        return found


def model_document(own_text: str, features: set[str]) -> str:
    """What the statistical model reads: the seller's words and one token per feature."""
    tokens = " ".join("zz" + re.sub(r"\W", "", f) for f in sorted(features))
    return f"{own_text}\n{tokens}".lower()


def word_count(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return len(_WORD.findall(_CJK.sub(" ", text))) + cjk // 2


def inputs(rows: Iterable[dict]) -> list[ClassifierInput]:
    return [ClassifierInput.from_corpus(r) for r in rows]
