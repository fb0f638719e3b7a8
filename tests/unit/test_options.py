"""Mailgun option parsing and the tracking decision."""

import pytest

from opentracking.core.errors import BadRequest
from opentracking.messages.options import (
    REASON_DOMAIN_DISABLED,
    REASON_MESSAGE_DISABLED,
    collect_variables,
    decide_tracking,
    normalise_tags,
    parse_bool,
)


@pytest.mark.parametrize(
    ("value", "expected"), [("yes", True), ("YES", True), (" true ", True), ("no", False), ("False", False)]
)
def test_yes_no_true_false(value, expected):
    assert parse_bool("o:tracking", value) is expected


@pytest.mark.parametrize("value", ["", "1", "on", "htmlonly", "yess"])
def test_other_values_are_bad_input(value):
    with pytest.raises(BadRequest, match="o:tracking"):
        parse_bool("o:tracking", value)


def test_htmlonly_is_a_click_value():
    assert parse_bool("o:tracking-clicks", "HtmlOnly", allow_htmlonly=True) == "htmlonly"


@pytest.mark.parametrize(
    ("options", "headers", "domain_active", "opens", "reason"),
    [
        ({}, {}, False, False, REASON_DOMAIN_DISABLED),
        ({}, {}, True, True, None),
        ({"o:tracking": "yes"}, {}, False, True, None),
        ({"o:tracking-opens": "yes"}, {}, False, True, None),
        ({"o:tracking": "no"}, {}, True, False, REASON_MESSAGE_DISABLED),
        # the specific option beats the general one, in both directions
        ({"o:tracking": "no", "o:tracking-opens": "yes"}, {}, False, True, None),
        ({"o:tracking": "yes", "o:tracking-opens": "no"}, {}, True, False, REASON_MESSAGE_DISABLED),
        # headers, for SMTP-style MIME submissions
        ({}, {"x-mailgun-track": "yes"}, False, True, None),
        ({}, {"x-mailgun-track-opens": "no"}, True, False, REASON_MESSAGE_DISABLED),
        ({}, {"x-mailgun-track": "no", "x-mailgun-track-opens": "yes"}, False, True, None),
        # API parameters beat headers
        ({"o:tracking-opens": "no"}, {"x-mailgun-track-opens": "yes"}, True, False, REASON_MESSAGE_DISABLED),
    ],
)
def test_tracking_precedence(options, headers, domain_active, opens, reason):
    decision = decide_tracking(options, headers, domain_active=domain_active, domain_top=False)
    assert (decision.opens, decision.reason) == (opens, reason)


def test_pixel_location_option_beats_domain_setting():
    assert decide_tracking(
        {"o:tracking-pixel-location-top": "yes"}, {}, domain_active=True, domain_top=False
    ).top
    assert not decide_tracking(
        {"o:tracking-pixel-location-top": "no"}, {}, domain_active=True, domain_top=True
    ).top
    assert decide_tracking(
        {}, {"x-mailgun-track-pixel-location-top": "true"}, domain_active=True, domain_top=False
    ).top


def test_bad_click_value_is_rejected_even_though_clicks_come_later():
    with pytest.raises(BadRequest, match="o:tracking-clicks"):
        decide_tracking({"o:tracking-clicks": "maybe"}, {}, domain_active=True, domain_top=False)


def test_tags_are_ascii_lowercase_deduplicated_at_most_three_of_128():
    tags = normalise_tags(["Newsletter", "newsletter", "caf\u00e9", "\u2603", "x" * 200, "fourth", "fifth"])
    assert tags == ["newsletter", "caf", "x" * 128]


def test_variables_merge_headers_then_v_fields():
    variables = collect_variables([("id", "42")], ['{"id": "1", "plan": "pro"}'])
    assert variables == {"id": "42", "plan": "pro"}


@pytest.mark.parametrize("header", ["not json", "[1, 2]", '"text"'])
def test_variables_header_must_be_a_json_object(header):
    with pytest.raises(BadRequest, match="X-Mailgun-Variables"):
        collect_variables([], [header])


def test_variables_over_16kb_are_rejected():
    with pytest.raises(BadRequest, match="16 kB"):
        collect_variables([("blob", "x" * 17000)], [])


@pytest.mark.parametrize(
    ("options", "headers", "domain_clicks", "clicks", "source"),
    [
        ({}, {}, "no", "no", "domain"),
        ({}, {}, "htmlonly", "htmlonly", "domain"),
        # o:tracking and X-Mailgun-Track switch on opens AND clicks (the seed: "Enable both")
        ({"o:tracking": "yes"}, {}, "no", "yes", "o:tracking"),
        ({}, {"x-mailgun-track": "true"}, "no", "yes", "X-Mailgun-Track"),
        ({"o:tracking": "no"}, {}, "yes", "no", "o:tracking"),
        # the specific option beats the general one, in both directions
        ({"o:tracking": "yes", "o:tracking-clicks": "htmlonly"}, {}, "no", "htmlonly", "o:tracking-clicks"),
        ({"o:tracking": "no", "o:tracking-clicks": "yes"}, {}, "no", "yes", "o:tracking-clicks"),
        (
            {},
            {"x-mailgun-track": "yes", "x-mailgun-track-clicks": "no"},
            "no",
            "no",
            "X-Mailgun-Track-Clicks",
        ),
        ({}, {"x-mailgun-track-clicks": "HtmlOnly"}, "yes", "htmlonly", "X-Mailgun-Track-Clicks"),
        # API parameters beat headers; o:tracking-opens says nothing about clicks
        ({"o:tracking-clicks": "no"}, {"x-mailgun-track-clicks": "yes"}, "yes", "no", "o:tracking-clicks"),
        ({"o:tracking": "yes"}, {"x-mailgun-track-clicks": "no"}, "no", "yes", "o:tracking"),
        ({"o:tracking-opens": "yes"}, {}, "htmlonly", "htmlonly", "domain"),
    ],
)
def test_click_tracking_precedence(options, headers, domain_clicks, clicks, source):
    decision = decide_tracking(
        options, headers, domain_active=False, domain_top=False, domain_clicks=domain_clicks
    )
    assert (decision.clicks, decision.clicks_source) == (clicks, source)


@pytest.mark.parametrize(
    ("options", "headers"),
    [
        ({"o:tracking": "htmlonly"}, {}),  # htmlonly is a click value only
        ({}, {"x-mailgun-track-clicks": "sometimes"}),
        # a value a more specific option overrides is still checked
        ({"o:tracking-clicks": "yes"}, {"x-mailgun-track-clicks": "maybe"}),
    ],
)
def test_bad_click_values_are_bad_input(options, headers):
    with pytest.raises(BadRequest):
        decide_tracking(options, headers, domain_active=True, domain_top=False)
