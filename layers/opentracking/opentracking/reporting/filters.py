"""Mailgun's event filters: a field of the events API and an expression over its values.

Every filter field Mailgun documents for `GET /v3/{domain}/events` is known here (`FIELDS`); a query
parameter that is neither one nor a paging or time parameter is a 400, never ignored, so a bounce processor
asking for `severity=permanent` cannot receive every event. Expressions follow Mailgun's "Filter
Expressions": `foo bar` and `foo AND bar` (both terms), `foo OR bar`, `"foo bar"` (the literal phrase),
`NOT foo` and `-foo`, `>10000 <20000` on numeric fields, and parentheses. A term matches a value equal to
it or one of the value's words (case-insensitive); a phrase matches where the value contains it. A field an
event does not have matches no term (so `NOT` of it matches).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

from opentracking.core.errors import BadRequest

# Every event type Mailgun documents; filtering by one this deployment does not produce finds nothing.
EVENT_TYPES = (
    "accepted",
    "rejected",
    "delivered",
    "failed",
    "opened",
    "clicked",
    "unsubscribed",
    "complained",
    "stored",
    "list_member_uploaded",
    "list_member_upload_error",
    "list_uploaded",
)
# Parameters of the events API that are not filters.
QUERY_PARAMETERS = frozenset({"begin", "end", "ascending", "limit", "pretty"})
MAX_EXPRESSION_LENGTH = 2048
MAX_NESTING = 16
_SEVERITIES = ("temporary", "permanent")


def _headers(event: dict[str, Any]) -> dict[str, Any]:
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers if isinstance(headers, dict) else {}


def _strings(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(item) for item in value if item is not None]
    return [] if value is None else [str(value)]


def _attachments(event: dict[str, Any]) -> list[str]:
    message = event.get("message")
    found = message.get("attachments") if isinstance(message, dict) else None
    return [str(a.get("filename")) for a in found or [] if isinstance(a, dict) and a.get("filename")]


def _size(event: dict[str, Any]) -> list[str]:
    message = event.get("message")
    return _strings(message.get("size")) if isinstance(message, dict) else []


def _list(event: dict[str, Any]) -> list[str]:
    mailing_list = event.get("mailing-list")
    return _strings(mailing_list.get("address")) if isinstance(mailing_list, dict) else []


def _recipients(event: dict[str, Any]) -> list[str]:
    message = event.get("message")
    listed = message.get("recipients") if isinstance(message, dict) else None
    return _strings(listed) or _strings(event.get("recipient"))


# field -> the values of one event (its payload, in Mailgun's shape) that the field's expression reads
FIELDS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "event": lambda event: _strings(event.get("event")),
    "list": _list,
    "attachment": _attachments,
    "from": lambda event: _strings(_headers(event).get("from")),
    "message-id": lambda event: [v.strip("<>") for v in _strings(_headers(event).get("message-id"))],
    "subject": lambda event: _strings(_headers(event).get("subject")),
    "to": lambda event: _strings(_headers(event).get("to")),
    "size": _size,
    "recipient": lambda event: _strings(event.get("recipient")),
    "recipients": _recipients,
    "tags": lambda event: _strings(event.get("tags")),
    "severity": lambda event: _strings(event.get("severity")),
}
NUMERIC_FIELDS = frozenset({"size"})

_TOKEN = re.compile(r'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<phrase>[^"]*)"|(?P<word>[^\s()"]+))')
_COMPARISON = re.compile(r"(?P<op>>=|<=|>|<)(?P<number>-?\d+(?:\.\d+)?)")
# Words are what is left between anything but letters, digits and what addresses and tags are made of.
_WORD_BREAK = re.compile(r"[^\w@.+'\-]+")


def _words(values: list[str]) -> set[str]:
    """What a term can equal: a whole value, or one of its words."""
    lowered = [value.lower() for value in values]
    words = {word.strip(".'-") for value in lowered for word in _WORD_BREAK.split(value)}
    return (words | set(lowered)) - {""}


# --- the expression tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    text: str  # lower case
    phrase: bool

    def matches(self, values: list[str], words: set[str]) -> bool:
        if self.phrase:
            return any(self.text in value.lower() for value in values)
        return self.text in words


@dataclass(frozen=True)
class Comparison:
    op: str
    number: float

    def matches(self, values: list[str], words: set[str]) -> bool:
        for value in values:
            try:
                number = float(value)
            except ValueError:
                continue
            if {
                ">": number > self.number,
                "<": number < self.number,
                ">=": number >= self.number,
                "<=": number <= self.number,
            }[self.op]:
                return True
        return False


@dataclass(frozen=True)
class Not:
    inner: Node

    def matches(self, values: list[str], words: set[str]) -> bool:
        return not self.inner.matches(values, words)


@dataclass(frozen=True)
class All:
    parts: tuple[Node, ...]

    def matches(self, values: list[str], words: set[str]) -> bool:
        return all(part.matches(values, words) for part in self.parts)


@dataclass(frozen=True)
class Any_:
    parts: tuple[Node, ...]

    def matches(self, values: list[str], words: set[str]) -> bool:
        return any(part.matches(values, words) for part in self.parts)


Node = Term | Comparison | Not | All | Any_


def terms(node: Node) -> Iterable[Term]:
    """Every term of an expression, wherever it stands."""
    if isinstance(node, Term):
        yield node
    elif isinstance(node, Not):
        yield from terms(node.inner)
    elif isinstance(node, All | Any_):
        for part in node.parts:
            yield from terms(part)


# --- parsing ------------------------------------------------------------------------------------------------


def _tokens(field: str, text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None:  # an unclosed quote
            raise BadRequest(f"'{field}' has an unclosed quote: {text!r}")
        kind = match.lastgroup or "word"
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class _Parser:
    def __init__(self, field: str, text: str) -> None:
        self.field, self.text = field, text
        self.tokens = _tokens(field, text)
        self.position = 0

    def bad(self, why: str) -> BadRequest:
        return BadRequest(f"'{self.field}' is not a valid filter expression ({why}): {self.text!r}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def parse(self) -> Node:
        if not self.tokens:
            raise self.bad("it is empty")
        node = self.either(0)
        if self.peek() is not None:
            raise self.bad("a ')' closes nothing")
        return node

    def either(self, depth: int) -> Node:
        parts = [self.both(depth)]
        while self.peek() == ("word", "OR"):
            self.take()
            parts.append(self.both(depth))
        return parts[0] if len(parts) == 1 else Any_(tuple(parts))

    def both(self, depth: int) -> Node:
        parts = [self.negated(depth)]
        while (token := self.peek()) is not None and token[0] != "close" and token != ("word", "OR"):
            if token == ("word", "AND"):
                self.take()
            parts.append(self.negated(depth))
        return parts[0] if len(parts) == 1 else All(tuple(parts))

    def negated(self, depth: int) -> Node:
        token = self.peek()
        if token == ("word", "NOT"):
            self.take()
            return Not(self.negated(depth))
        kind, text = token or ("", "")
        minus = kind == "word" and text.startswith("-") and len(text) > 1
        if minus and not (self.field in NUMERIC_FIELDS and _COMPARISON.fullmatch(text)):
            self.take()
            return Not(self.word(text[1:]))
        return self.single(depth)

    def single(self, depth: int) -> Node:
        token = self.peek()
        if token is None or token[0] == "close":
            raise self.bad("a term is missing")
        kind, value = self.take()
        if kind == "open":
            if depth + 1 > MAX_NESTING:
                raise self.bad(f"parentheses nested more than {MAX_NESTING} deep")
            node = self.either(depth + 1)
            if self.peek() is None or self.take()[0] != "close":
                raise self.bad("a '(' is not closed")
            return node
        if kind == "phrase":
            if not value.strip():
                raise self.bad("an empty phrase")
            return self.checked(Term(value.lower(), phrase=True))
        if value in ("AND", "OR", "NOT"):
            raise self.bad(f"{value} needs a term")
        return self.word(value)

    def word(self, value: str) -> Node:
        comparison = _COMPARISON.fullmatch(value)
        if comparison:
            if self.field not in NUMERIC_FIELDS:
                raise self.bad(f"{comparison.group('op')} applies to numeric fields only")
            return Comparison(comparison.group("op"), float(comparison.group("number")))
        return self.checked(Term(value.lower(), phrase=False))

    def checked(self, term: Term) -> Term:
        if self.field == "event" and term.text not in EVENT_TYPES:
            raise BadRequest(f"'event' must be one of {', '.join(EVENT_TYPES)}, not {term.text!r}")
        if self.field == "severity" and term.text not in _SEVERITIES:
            raise BadRequest(f"'severity' must be temporary or permanent, not {term.text!r}")
        if self.field == "message-id":
            return Term(term.text.strip("<>"), term.phrase)
        return term


def parse(field: str, text: str) -> Node:
    """One field's expression; a 400 in Mailgun's shape when it is not one."""
    if field not in FIELDS:
        raise BadRequest(f"'{field}' is not a filter of the events API")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise BadRequest(f"'{field}' must be at most {MAX_EXPRESSION_LENGTH} characters")
    return _Parser(field, text).parse()


@dataclass(frozen=True)
class EventFilter:
    """Every field's expression; an event is kept when it satisfies all of them."""

    expressions: tuple[tuple[str, Node], ...]

    def __bool__(self) -> bool:
        return bool(self.expressions)

    def keeps(self, event: dict[str, Any]) -> bool:
        for field, node in self.expressions:
            values = FIELDS[field](event)
            if field in ("from", "to"):  # "an email address mentioned in the header": its addresses too
                values = values + [address for _name, address in getaddresses(values) if address]
            if not node.matches(values, _words(values)):
                return False
        return True


def event_filter(params: dict[str, str | None]) -> EventFilter:
    """The filter the events API's query asks for: every parameter is a known one, every filter is parsed."""
    expressions = []
    for name, value in params.items():
        if name in QUERY_PARAMETERS:
            continue
        if name not in FIELDS:
            known = ", ".join(sorted(FIELDS))
            raise BadRequest(f"'{name}' is not a parameter of the events API; its filters are {known}")
        if value is None or not value.strip():
            continue  # an empty filter filters nothing, as an absent one
        expressions.append((name, parse(name, value)))
    return EventFilter(tuple(expressions))


def from_state(state: dict[str, str]) -> EventFilter:
    """The filter a paging token carries (its expressions as the client wrote them)."""
    return event_filter({name: value for name, value in state.items() if isinstance(value, str)})
