"""Content and history detectors: generic kinds whose parameters live in policy files.

Each detector reduces a message (and its history) to one boolean fact, or to
None when the record lacks what it needs; beside the value it returns the
quoted span that decided it, so a finding can show why.
"""
from __future__ import annotations

import atexit
import os
import re
import signal
import threading
import time
from datetime import timedelta
from functools import cached_property
from html.parser import HTMLParser
from typing import Annotated, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .model import AttachmentKind, Category, Channel, Message
from .prefilter import INDEX as _LITERALS, fold, required_literals

# "links" is the link targets (href attributes) of an HTML body, one per line:
# what a buyer can click, as opposed to image sources.
TextField = Literal["subject", "body", "text", "html", "links"]


def check_regexes(patterns: list[str], label: str) -> list[str]:
    """Validator body for regex lists in policy data: the first one that fails is named."""
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"{label} {p!r} does not compile (not a valid regular expression): {exc}") from None
    return patterns


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str = ""


class _RegexSpec(_Spec):
    """A detector that needs one of several regular expressions (its alternatives) to match.

    `regex` is their union. Each alternative also runs alone behind the literal
    prefilter (engine.prefilter): `may_match` is exact about *whether* the union
    matches a text, and costs a fraction of it; the union then gives the span."""

    def _alternative_patterns(self) -> list[str]:
        raise NotImplementedError

    @property
    def _flags(self) -> int:
        return re.IGNORECASE if getattr(self, "ignore_case", True) else 0

    @cached_property
    def regex(self) -> re.Pattern:
        return re.compile("|".join(f"(?:{p})" for p in self._alternative_patterns()), self._flags)

    @cached_property
    def alternatives(self) -> tuple[tuple[re.Pattern, Optional[int]], ...]:
        """(alternative, index of its required literals in the prefilter, None if it has none)."""
        return _prefiltered(self._alternative_patterns(), self._flags)

    @cached_property
    def literal_gate(self) -> Optional[frozenset[int]]:
        """The prefilter sets of all alternatives, when every alternative has one: if none
        of them occurs in the message, no alternative can match (one set test, no loop)."""
        indices = [index for _, index in self.alternatives]
        return None if any(i is None for i in indices) else frozenset(indices)

    def may_match(self, views: "TextViews", texts: Callable[[], list[str]]) -> bool:
        """Whether `regex` matches one of the texts (a view's literal hits prune alternatives)."""
        gate = self.literal_gate
        if gate is not None and gate.isdisjoint(views.literal_hits()):
            return False
        return _any_match(self.alternatives, views, texts)


def _prefiltered(patterns: list[str], flags: int) -> tuple[tuple[re.Pattern, Optional[int]], ...]:
    out = []
    for pattern in patterns:
        literals = required_literals(pattern, flags)
        out.append((re.compile(pattern, flags), None if literals is None else _LITERALS.register(literals)))
    return tuple(out)


def _any_match(alternatives, views: "TextViews", texts: Callable[[], list[str]]) -> bool:
    hits = None
    searched: Optional[list[str]] = None
    for regex, index in alternatives:
        if index is not None:
            if hits is None:
                hits = views.literal_hits()
            if index not in hits:
                continue
        if searched is None:
            searched = texts()
        for text in searched:
            if regex.search(text):
                return True
    return False


class PatternDetector(_RegexSpec):
    """True when any regular expression (Python syntax) matches one of the fields."""

    kind: Literal["pattern"]
    fields: list[TextField] = Field(min_length=1)
    patterns: list[str] = Field(min_length=1)
    ignore_case: bool = True

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns):
        return check_regexes(patterns, "pattern")

    def _alternative_patterns(self) -> list[str]:
        return list(self.patterns)


class PhrasesDetector(_RegexSpec):
    """True when any phrase occurs (case-insensitive, any run of white space between words)."""

    kind: Literal["phrases"]
    fields: list[TextField] = Field(min_length=1)
    phrases: list[str] = Field(min_length=1)

    def _alternative_patterns(self) -> list[str]:
        alternatives = []
        for phrase in sorted(self.phrases, key=len, reverse=True):
            words = [re.escape(w) for w in phrase.split()]
            body = r"\s+".join(words)
            # Word boundaries only where the phrase edge is a letter or digit, so
            # "rate" does not match "separate" while Japanese phrases still match.
            start = r"(?<!\w)" if phrase[:1].isalnum() and phrase[:1].isascii() else ""
            end = r"(?!\w)" if phrase[-1:].isalnum() and phrase[-1:].isascii() else ""
            alternatives.append(start + body + end)
        return alternatives


class FieldDetector(_Spec):
    """The truth of an optional boolean record field; unknown when absent."""

    kind: Literal["field"]
    field: str


class WindowDetector(_Spec):
    """True when sent_at is at most max_days × 24 h after the first anchor present."""

    kind: Literal["window"]
    anchors: list[Literal["delivered_at", "order_placed_at"]] = Field(min_length=1)
    # A century bounds the date arithmetic (a larger window would overflow it) and is no limit in practice.
    max_days: int = Field(ge=0, le=36500)


class PriorCountDetector(_Spec):
    """True when at least `at_least` earlier seller messages of the same order (or buyer) match."""

    kind: Literal["prior_count"]
    scope: Literal["order", "buyer"]
    categories: list[Category] = Field(default_factory=list)
    channels: list[Channel] = Field(default_factory=list)
    at_least: int = Field(1, ge=1)

    def counts(self, message: Message) -> bool:
        return message.initiated_by.value == "seller" and (
            message.category in self.categories or message.channel in self.channels
        )

    def might_count(self, message: Message, candidates: tuple[str, ...]) -> bool:
        """An uncategorised message counts possibly when one of its candidate categories would count."""
        return (message.initiated_by.value == "seller" and message.category is None
                and any(c.value in candidates for c in self.categories))


class LanguageMatchDetector(_Spec):
    """True when the message's language equals the buyer's language of preference (primary subtag)."""

    kind: Literal["language_match"]


class UrlDetector(_Spec):
    """True when the text holds a link whose host is not among allowed_hosts (suffix match)."""

    kind: Literal["urls"]
    fields: list[TextField] = Field(default_factory=lambda: ["text", "html"])
    allowed_hosts: list[str] = Field(default_factory=list)
    # Only hosts on these suffixes count; empty means every host.
    only_hosts: list[str] = Field(default_factory=list)


class OnlyPatternsDetector(_RegexSpec):
    """True when the text holds nothing but matches of the patterns, give or take a few words.

    Every match of every pattern (Python regex) is cut out; the text counts as
    "only these" when at least one match was found and at most max_other_words
    words remain (room for a name or a signature). Empty text is False.
    """

    kind: Literal["only_patterns"]
    fields: list[TextField] = Field(min_length=1)
    patterns: list[str] = Field(min_length=1)
    max_other_words: int = Field(0, ge=0)
    # At least one of these must match too (e.g. the thanks itself), so that a
    # short text made only of filler (a greeting, an order number) is not caught.
    required_patterns: list[str] = Field(default_factory=list)
    ignore_case: bool = True

    @field_validator("patterns", "required_patterns")
    @classmethod
    def _compiles(cls, patterns):
        return PatternDetector._compiles(patterns)

    def _alternative_patterns(self) -> list[str]:
        return list(self.patterns)

    @cached_property
    def required(self) -> Optional[re.Pattern]:
        if not self.required_patterns:
            return None
        flags = re.IGNORECASE if self.ignore_case else 0
        return re.compile("|".join(f"(?:{p})" for p in self.required_patterns), flags)

    @cached_property
    def required_alternatives(self) -> tuple[tuple[re.Pattern, Optional[int]], ...]:
        return _prefiltered(self.required_patterns, self._flags)

    def check(self, text: str, views: Optional["TextViews"] = None) -> tuple[bool, str]:
        if not text.strip():
            return False, ""
        if views is None:
            if not self.regex.search(text) or (self.required is not None and not self.required.search(text)):
                return False, ""
        # The required patterns (the thanks itself) are rarer than the filler: test them first.
        elif (self.required_patterns and not _any_match(self.required_alternatives, views, lambda: [text])) \
                or not self.may_match(views, lambda: [text]):
            return False, ""
        rest = _WORD.findall(self.regex.sub(" ", text))
        if len(rest) > self.max_other_words:
            return False, ""
        return True, " ".join(text.split())[:120]


_WORD = re.compile(r"\w+")


class AttachmentsDetector(_Spec):
    """True when an attachment's kind is outside allowed_kinds."""

    kind: Literal["attachments"]
    allowed_kinds: list[AttachmentKind]


DetectorSpec = Annotated[
    Union[
        PatternDetector,
        PhrasesDetector,
        FieldDetector,
        WindowDetector,
        PriorCountDetector,
        LanguageMatchDetector,
        UrlDetector,
        AttachmentsDetector,
        OnlyPatternsDetector,
    ],
    Field(discriminator="kind"),
]


# ---- text views of a message ----------------------------------------------


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "p", "div", "li", "tr", "blockquote"):
            self.parts.append("\n")


_HTML_HINT = re.compile(r"<\s*(?:html|body|p|br|div|span|a|img|table|b|strong|i|em|ul|li|blockquote)\b", re.I)


def body_text(body: str) -> str:
    """The readable text of a body given as plain text or HTML."""
    if not _HTML_HINT.search(body):
        return body
    parser = _TextExtractor()
    parser.feed(body)
    parser.close()
    return "".join(parser.parts)


class TextViews:
    """Subject, body text, raw HTML and subject+body, each computed once per message."""

    __slots__ = ("message", "_body", "_hits", "_generation")

    def __init__(self, message: Message):
        self.message = message
        self._body: Optional[str] = None
        self._hits: frozenset[int] = frozenset()
        self._generation = -1

    def literal_hits(self) -> frozenset[int]:
        """The prefilter's literal sets that occur somewhere in the message's text fields."""
        if self._generation != _LITERALS.generation:
            # Every field in one folded string: subject, body text and, for HTML, the raw
            # body (which holds the link targets). Literals never contain the "\n" joints.
            if self._body is None:
                self._body = body_text(self.message.body)
            parts = [self.message.subject, self._body]
            if self.message.body != self._body:
                parts.append(self.message.body)
            self._generation = _LITERALS.generation
            self._hits = _LITERALS.matching(fold("\n".join(parts)))
        return self._hits

    def get(self, name: str) -> str:
        if name == "subject":
            return self.message.subject
        if name == "html":
            return self.message.body
        if name == "links":
            return "\n".join(_HREF.findall(self.message.body))
        if self._body is None:
            self._body = body_text(self.message.body)
        if name == "body":
            return self._body
        return self.message.subject + "\n" + self._body


_HREF = re.compile(r"""\bhref\s*=\s*["']?\s*([^"'\s>]+)""", re.I)
_URL = re.compile(r"""(?:https?://|www\.)[^\s<>"'()\[\]]+""", re.I)


_URL_PREFILTER: list = []


def _url_prefilter() -> Optional[int]:
    if not _URL_PREFILTER:
        literals = required_literals(_URL.pattern, _URL.flags)
        _URL_PREFILTER.append(None if literals is None else _LITERALS.register(literals))
    return _URL_PREFILTER[0]


def _url_host(url: str) -> str:
    rest = re.sub(r"^https?://", "", url, flags=re.I)
    return re.split(r"[/:?#]", rest, maxsplit=1)[0].lower()


def _host_matches(host: str, suffixes: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == s or host.endswith("." + s) for s in suffixes)


# ---- a time limit on pattern matching ------------------------------------------------------

# Python's regular expressions backtrack: a pattern such as (a+)+$ can take exponential time
# on a short text. The shipped patterns are linear (tests/robustness); a pattern from an
# overlay or another policy directory may not be, so one detector's matching on one message
# is stopped after this many seconds and its fact is unknown (the rule is indeterminate).
def _time_limit(default: float = 2.0) -> float:
    try:
        value = float(os.environ.get("MSGPOLICY_PATTERN_TIME_LIMIT", default))
    except ValueError:
        return default  # a malformed setting must not break every command at import
    return value if value > 0 else default


PATTERN_TIME_LIMIT = _time_limit()


class PatternTimeout(Exception):
    pass


class _PatternClock:
    """A one-shot SIGALRM timer armed when matching starts and re-armed only while a match is
    still running, so a process that matches all the time gets one signal per time limit and
    a match costs two attribute writes. Only in the main thread (where signals are handled);
    elsewhere, and where SIGALRM already has a handler, matching runs without a limit."""

    def __init__(self):
        self.started: Optional[float] = None
        self.armed = False
        self.usable: Optional[bool] = None
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.armed = False  # interval timers are not inherited
        self.started = None

    def _install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None, self._fire):
            return False
        signal.signal(signal.SIGALRM, self._fire)
        # The timer outlives the last match by up to the time limit, and interpreter shutdown
        # puts SIGALRM back to its default action (end the process) after atexit: disarm first.
        atexit.register(self.disarm)
        return True

    def disarm(self) -> None:
        self.started = None
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)

    def _fire(self, signum, frame) -> None:
        started = self.started
        if started is None:
            self.armed = False
            return
        elapsed = time.monotonic() - started
        if elapsed >= PATTERN_TIME_LIMIT:
            self.started = None
            self.armed = False
            raise PatternTimeout()
        signal.setitimer(signal.ITIMER_REAL, PATTERN_TIME_LIMIT - elapsed)

    def start(self) -> bool:
        if self.usable is None or (self.usable and threading.current_thread() is not threading.main_thread()):
            self.usable = self._install()
        if not self.usable or threading.current_thread() is not threading.main_thread():
            return False
        self.started = time.monotonic()
        if not self.armed:
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, PATTERN_TIME_LIMIT)
        return True

    def stop(self) -> None:
        self.started = None


_CLOCK = _PatternClock()


def run_detector(spec, message: Message, views: TextViews, history) -> tuple[Optional[bool], str]:
    """Evaluate one detector: (value, quoted span). `history` answers prior_count questions."""
    if isinstance(spec, _RegexSpec):
        timed = _CLOCK.start()
        try:
            return _run_detector(spec, message, views, history)
        except PatternTimeout:
            return None, f"pattern matching stopped after {PATTERN_TIME_LIMIT:g} s (time limit)"
        finally:
            if timed:
                _CLOCK.stop()
    return _run_detector(spec, message, views, history)


def _run_detector(spec, message: Message, views: TextViews, history) -> tuple[Optional[bool], str]:
    if isinstance(spec, (PatternDetector, PhrasesDetector)):
        if not spec.may_match(views, lambda: [views.get(name) for name in spec.fields]):
            return False, ""
        for name in spec.fields:
            match = spec.regex.search(views.get(name))
            if match:
                return True, match.group(0).strip()
        return False, ""
    if isinstance(spec, FieldDetector):
        value = getattr(message, spec.field, None)
        if value is None and message.model_extra:
            value = message.model_extra.get(spec.field)
        return (None, "") if value is None else (bool(value), f"{spec.field} = {value}")
    if isinstance(spec, WindowDetector):
        for anchor_name in spec.anchors:
            anchor = getattr(message, anchor_name)
            if anchor is not None:
                elapsed = message.sent_at - anchor
                days = elapsed / timedelta(days=1)
                span = f"{days:.1f} days after {anchor_name}"
                return elapsed <= timedelta(days=spec.max_days), span
        return None, "no " + " or ".join(spec.anchors)
    if isinstance(spec, PriorCountDetector):
        count, first, possible = history.prior_count(spec, message)
        if count >= spec.at_least:
            return True, f"{count} earlier, first {first}"
        if count + possible >= spec.at_least:
            # Earlier messages whose category is uncertain may count: unknown, never a pass.
            return None, f"{count} earlier, {possible} more if their uncertain category counts"
        return False, (f"{count} earlier, first {first}" if count else "")
    if isinstance(spec, LanguageMatchDetector):
        if not message.language or not message.buyer_language:
            return None, ""
        same = _primary(message.language) == _primary(message.buyer_language)
        return same, f"{message.language} vs buyer's {message.buyer_language}"
    if isinstance(spec, UrlDetector):
        index = _url_prefilter()
        if index is not None and index not in views.literal_hits():
            return False, ""
        for name in spec.fields:
            for url in _URL.findall(views.get(name)):
                host_name = _url_host(url)
                if spec.only_hosts and not _host_matches(host_name, spec.only_hosts):
                    continue
                if not _host_matches(host_name, spec.allowed_hosts):
                    return True, url
        return False, ""
    if isinstance(spec, OnlyPatternsDetector):
        # All fields together must consist of the patterns (a subject "Thanks!" over a real body is not thanks-only).
        return spec.check("\n".join(views.get(name) for name in spec.fields), views)
    if isinstance(spec, AttachmentsDetector):
        for attachment in message.attachments:
            if attachment.kind not in spec.allowed_kinds:
                return True, f"{attachment.name} ({attachment.kind.value})"
        return False, ""
    raise TypeError(f"unknown detector {spec!r}")


def _primary(tag: str) -> str:
    return tag.replace("_", "-").split("-")[0].lower()
