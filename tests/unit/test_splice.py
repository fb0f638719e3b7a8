"""Plan once, splice per copy (opentracking.mail.splice, submission._track_by_template) against the
per-copy path.

The per-copy path (links.rewrite, then inject, for every copy) stays the reference. For every message the
injector's and the rewriter's own tests feed them, and for every message of the shared corpus, one
submission of several copies is tracked both ways with the same key ring and copy ids (so the same
tokens), and every copy must come out byte for byte the same, with the same link counts, flags and
reasons. Where the template cannot be derived (base64 bodies, for one) the message must take the per-copy
path untouched; how often that happens over the corpus is reported, not asserted.
"""

from __future__ import annotations

import base64
import dataclasses
import quopri
from pathlib import Path

import pytest

from opentracking.domains import registry
from opentracking.mail import injection, links, splice
from opentracking.messages import options, submission
from opentracking.privacy import policy, suppressions
from opentracking.tracking import tokens
from tests.helpers.corpus import CORPUS

UNIT = Path(__file__).resolve().parent
KEYRING = tokens.KeyRing.from_secret({"active": "1", "1": "splice-test-master-key-0123456789abcdef"})
DOMAIN = registry.Domain(name="example.com", cname_target="t.example", tracking_ready=True)
RECIPIENTS = [f"reader{i}@example.net" for i in range(5)]

# (opens, clicks mode, top, privacy, suppressed recipients)
CONFIGS = [
    (True, options.CLICKS_NO, False, policy.PrivacySettings(), frozenset()),
    (
        True,
        options.CLICKS_NO,
        True,
        policy.PrivacySettings(anonymize_ip=True, event_retention_days=7),
        frozenset(),
    ),
    (False, options.CLICKS_HTMLONLY, False, policy.PrivacySettings(), frozenset()),
    (True, options.CLICKS_YES, False, policy.PrivacySettings(), frozenset({RECIPIENTS[1]})),
    (True, options.CLICKS_YES, True, policy.PrivacySettings(event_retention_days=30), frozenset()),
]


def _submission(message: bytes, opens: bool, clicks: str, top: bool, settings) -> submission.Submission:
    decision = options.TrackingDecision(opens=opens, top=top, reason=None, clicks=clicks)
    made = submission.Submission(
        domain=DOMAIN,
        message_id="<m@example.com>",
        sender="news@example.com",
        subject="s",
        recipients=list(RECIPIENTS),
        tags=[],
        user_variables={},
        decision=decision,
        testmode=False,
        reason=decision.reason,
        click_reason=submission._click_reason(decision),
        privacy=settings,
    )
    # Deterministic copy ids, one shared message object: what _make_copies hands track().
    made.copies = [
        submission.Copy(
            copy_id=bytes([i + 1]) * tokens.COPY_ID_BYTES, recipient=r, message=message, user_variables={}
        )
        for i, r in enumerate(RECIPIENTS)
    ]
    return made


def _outcome(made: submission.Submission) -> tuple:
    return (
        made.reason,
        made.click_reason,
        [(c.message, c.links, c.tracked, c.untracked_reason) for c in made.copies],
    )


def _both_ways(message: bytes, monkeypatch) -> list[bool | None]:
    """Track *message* under every config both ways and assert equal outcomes. Per config: whether it
    spliced, or None when the per-copy path changes no byte either (nothing to track: signed, no HTML,
    no links with clicks only, ...)."""
    spliced = []
    for opens, clicks, top, settings, suppressed in CONFIGS:
        planned = _submission(message, opens, clicks, top, settings)
        before = _outcome(planned)
        applied = submission._track_by_template(planned, KEYRING, "https", suppressed)
        if not applied:
            assert _outcome(planned) == before  # declined: nothing was changed
            submission.track(planned, KEYRING, "https", suppressed=suppressed)  # what track() then does
        with monkeypatch.context() as m:
            m.setattr(submission, "SPLICE_MIN_COPIES", 10**9)  # the per-copy path only
            reference = _submission(message, opens, clicks, top, settings)
            submission.track(reference, KEYRING, "https", suppressed=suppressed)
        assert _outcome(planned) == _outcome(reference), (opens, clicks, top, settings, suppressed)
        changed = any(c.message != message for c in reference.copies)
        spliced.append(applied if changed or applied else None)
    return spliced


# --- the inputs of the injector's and the rewriter's own tests ---


def _recorded_inputs() -> list[bytes]:
    """Every message test_injection.py and test_links.py hand to inject/rewrite (run in process)."""
    recorded: dict[bytes, None] = {}
    originals = {"inject": injection.inject, "rewrite": links.rewrite}

    def recorder(function):
        def wrapper(message, *args, **kwargs):
            if isinstance(message, (bytes, bytearray)):
                recorded[bytes(message)] = None
            return function(message, *args, **kwargs)

        return wrapper

    class Plugin:
        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_call(self, item):
            module = item.module
            saved = {
                name: getattr(module, name)
                for name in originals
                if getattr(module, name, None) is originals[name]
            }
            for name in saved:
                setattr(module, name, recorder(originals[name]))
            try:
                return (yield)
            finally:
                for name, value in saved.items():
                    setattr(module, name, value)

    code = pytest.main(
        [
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(UNIT / "test_injection.py"),
            str(UNIT / "test_links.py"),
        ],
        plugins=[Plugin()],
    )
    assert code == 0
    return list(recorded)


@pytest.fixture(scope="module")
def synthetic_inputs() -> list[bytes]:
    inputs = _recorded_inputs()
    assert len(inputs) > 50  # the recorder saw the tests' messages
    return inputs


def test_synthetic_inputs_splice_exactly_as_the_per_copy_path(synthetic_inputs, monkeypatch):
    spliced = [applied for message in synthetic_inputs for applied in _both_ways(message, monkeypatch)]
    tracked = [applied for applied in spliced if applied is not None]
    print(
        f"\nsynthetic: {len(synthetic_inputs)} messages; "
        f"spliced {sum(tracked)} of {len(tracked)} tracked submissions"
    )
    assert any(tracked)


# --- the corpus ---


def _corpus() -> list[tuple[str, bytes]]:
    if not (CORPUS / "html").is_dir() or not (CORPUS / "mime").is_dir():
        return []
    found = [(f"mime/{p.name}", p.read_bytes()) for p in sorted((CORPUS / "mime").iterdir()) if p.is_file()]
    for p in sorted((CORPUS / "html").iterdir()):
        if p.is_file():
            # Each HTML template in the encodings a sender uses; base64 is expected to decline.
            found.append((f"html/{p.name} (8bit)", _wrap(p.read_bytes(), "8bit")))
            found.append((f"html/{p.name} (quoted-printable)", _wrap(p.read_bytes(), "quoted-printable")))
            found.append((f"html/{p.name} (base64)", _wrap(p.read_bytes(), "base64")))
    return found


def _wrap(html: bytes, cte: str) -> bytes:
    body = {
        "8bit": html,
        "quoted-printable": quopri.encodestring(html),
        "base64": base64.encodebytes(html),
    }[cte]
    return (
        b"From: a@example.com\r\nTo: b@example.net\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "
        + cte.encode()
        + b"\r\n\r\n"
        + body
    )


@pytest.mark.corpus
def test_corpus_splices_exactly_as_the_per_copy_path(monkeypatch):
    corpus = _corpus()
    if not corpus:
        pytest.skip(f"corpus tier skipped: no corpus at {CORPUS} (set OPENTRACKING_CORPUS)")
    declined: list[str] = []
    total = applied = untouched = 0
    by_kind: dict[str, list[int]] = {}  # mime/, html/ (8bit), ...: [messages that track, of them declined]
    for name, message in corpus:
        results = _both_ways(message, monkeypatch)
        tracked = [r for r in results if r is not None]
        kind = name.split("/")[0] + (name[name.rfind(" ") :] if name.endswith(")") else "")
        tally = by_kind.setdefault(kind, [0, 0])
        tally[0] += bool(tracked)
        tally[1] += bool(tracked) and not all(tracked)
        untouched += len(results) - len(tracked)
        total += len(tracked)
        applied += sum(tracked)
        if not all(tracked):
            declined.append(f"{name}: {len(tracked) - sum(tracked)} of {len(tracked)}")
    print(
        f"\ncorpus: {len(corpus)} messages x {len(CONFIGS)} configs; {untouched} change no byte either way; "
        f"of the {total} that track, {applied} spliced and {total - applied} took the per-copy path:"
    )
    print("\n".join(f"  {line}" for line in declined))
    for kind, (tracking, fell_back) in by_kind.items():
        print(f"  {kind}: {fell_back} of {tracking} messages that track took the per-copy path at least once")
    assert applied > total // 2


# --- the template itself ---


def _render_for(message: bytes):
    def render(token_for):
        link = links.rewrite(message, lambda url: f"https://t.example/c/{token_for(('click', url))}")
        return injection.inject(link.message, f"https://t.example/o/{token_for(('open',))}").message

    return render


def _lengths(key) -> int:
    return 40 if key == ("open",) else 60


def test_a_soft_break_inside_a_token_is_a_constant_between_two_slices():
    html = b"<html><body><p>" + b"x" * 60 + b'<a href="https://example.org/a">a</a></p></body></html>'
    message = _wrap(html, "quoted-printable")
    template = splice.build(_render_for(message), _lengths)
    assert template is not None
    slots = [p for p in template.pieces if isinstance(p, tuple)]
    assert len(slots) > len(template.keys)  # at least one token was split by a soft line break
    tokens_ = ["A" * 40 if k == ("open",) else "b-_9" * 15 for k in template.keys]
    assert template.fill(tokens_) == _render_for(message)(lambda k: tokens_[template.keys.index(k)])


def test_base64_bodies_have_no_template():
    message = _wrap(b'<html><body><a href="https://example.org/">a</a></body></html>', "base64")
    assert splice.build(_render_for(message), _lengths) is None


def test_a_token_of_another_length_is_refused():
    message = _wrap(b'<html><body><a href="https://example.org/">a</a></body></html>', "8bit")
    template = splice.build(_render_for(message), _lengths)
    assert template is not None
    assert template.fill(["A" * 41 if k == ("open",) else "B" * 60 for k in template.keys]) is None


def test_few_or_per_recipient_copies_take_the_per_copy_path():
    message = _wrap(b"<html><body><p>hi</p></body></html>", "8bit")
    few = _submission(message, True, options.CLICKS_NO, False, policy.PrivacySettings())
    few.copies = few.copies[: submission.SPLICE_MIN_COPIES - 1]
    assert not submission._track_by_template(few, KEYRING, "https", frozenset())
    own = _submission(message, True, options.CLICKS_NO, False, policy.PrivacySettings())
    own.copies = [dataclasses.replace(c, message=c.message + c.recipient.encode()) for c in own.copies]
    assert not submission._track_by_template(own, KEYRING, "https", frozenset())
    assert suppressions.REASON_SUPPRESSED  # the suppressed config above relies on it


def test_a_template_that_disagrees_with_a_real_copy_is_not_used(monkeypatch):
    message = _wrap(b'<html><body><a href="https://example.org/">a</a></body></html>', "8bit")
    monkeypatch.setattr(splice.Template, "fill", lambda self, tokens: b"not what the per-copy path makes")
    made = _submission(message, True, options.CLICKS_YES, False, policy.PrivacySettings())
    before = _outcome(made)
    assert not submission._track_by_template(made, KEYRING, "https", frozenset())
    assert _outcome(made) == before
    submission.track(made, KEYRING, "https")  # the per-copy path then tracks every copy
    assert all(c.tracked and c.links == 1 and c.message != message for c in made.copies)
