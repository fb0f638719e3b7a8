"""Mailgun's filter expressions (reporting.filters), as a parser: any text is an expression or a 400."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentracking.core.errors import BadRequest
from opentracking.reporting import filters

EVENT = {
    "event": "failed",
    "severity": "permanent",
    "recipient": "ann@example.net",
    "tags": ["Launch", "eu"],
    "message": {
        "headers": {
            "from": '"Sender, Ann" <s@example.com>',
            "to": "Ann <ann@example.net>, bob@example.net",
            "subject": "Hello Rachel",
            "message-id": "abc@example.com",
        },
        "attachments": [{"filename": "report.pdf"}],
        "size": 12000,
    },
}


@pytest.mark.parametrize(
    ("field", "expression", "kept"),
    [
        ("event", "failed", True),
        ("event", "delivered OR failed", True),
        ("event", "NOT failed", False),
        ("severity", "permanent", True),
        ("severity", "temporary", False),
        ("tags", "launch", True),  # tags compare without case
        ("tags", "launch eu", True),  # both terms
        ("tags", "launch -eu", False),
        ("to", "bob@example.net", True),  # an address the header mentions
        ("to", "ann", True),  # a word of it
        ("from", "s@example.com", True),
        ("message-id", "<abc@example.com>", True),  # with or without its angle brackets
        ("subject", "hello AND NOT rachel", False),
        ("subject", '"hello rachel"', True),
        ("attachment", "report.pdf", True),
        ("size", ">10000 <20000", True),
        ("size", ">=12000 <=12000", True),
        ("size", ">12000", False),
        ("size", "12000", True),
        ("list", "news@example.com", False),  # a field the event does not have matches no term
        ("list", "NOT news@example.com", True),
    ],
)
def test_an_expression_over_one_event(field, expression, kept):
    assert filters.event_filter({field: expression}).keeps(EVENT) is kept


def test_every_field_of_a_query_must_hold():
    assert filters.event_filter({"event": "failed", "tags": "eu"}).keeps(EVENT)
    assert not filters.event_filter({"event": "failed", "tags": "us"}).keeps(EVENT)


ALPHABET = st.sampled_from(
    ["(", ")", '"', " ", "-", "AND", "OR", "NOT", ">", "<", "=", "5", "a", "é", "\x00"]
)


@given(text=st.lists(ALPHABET, max_size=40).map("".join), field=st.sampled_from(sorted(filters.FIELDS)))
@settings(max_examples=300, deadline=None)
def test_any_text_is_an_expression_or_a_clear_400(text, field):
    try:
        expression, refusal = filters.event_filter({field: text}), ""
    except BadRequest as exc:
        expression, refusal = None, exc.message
    if expression is None:
        assert f"'{field}'" in refusal  # names the parameter, as every 400 of the API does
        return
    assert isinstance(expression.keeps(EVENT), bool)
    assert isinstance(expression.keeps({}), bool)  # an event with none of the fields
