"""Coverage-guided fuzzing (atheris) of the parsers that see raw attacker input: the MIME injector, the
link rewriter and the pixel and click token verifiers.

    python fuzz/fuzz_targets.py injector -runs=20000 -seed=1
    python fuzz/fuzz_targets.py links -runs=20000 -seed=1
    python fuzz/fuzz_targets.py tokens -runs=20000 -seed=1
    python fuzz/fuzz_targets.py click_tokens -runs=20000 -seed=1
    python fuzz/fuzz_targets.py shapes -runs=2000 -seed=1

A target fails (non-zero exit, with the crashing input saved) when the code raises anything it does not
promise to raise, or breaks a promise: the injector returns the input unchanged when it does not inject,
and puts exactly one pixel in when it does; the rewriter changes the message exactly when it rewrote a
link; the verifiers only ever raise InvalidToken, and accept a genuine token in its one spelling only.

`shapes` reaches what a byte-level fuzzer with a few kilobytes of input cannot: one of the hostile
fragments (unclosed conditionals, long parameter lists, footers after base64) repeated up to 5,000 times
inside a fuzzed message, through the injector and the link rewriter.
"""

import sys

import atheris

with atheris.instrument_imports():
    from opentracking.injection import inject
    from opentracking.mail.links import rewrite
    from opentracking.tracking import tokens

PIXEL = "https://email.example.com/o/FUZZ"
KEYRING = tokens.KeyRing.from_secret({"active": "1", "1": "k" * 48})


def injector(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    top = provider.ConsumeBool()
    message = provider.ConsumeBytes(provider.remaining_bytes())
    result = inject(message, PIXEL, top=top)
    if not result.injected and result.message != message:
        raise AssertionError("not injected, yet the message changed")
    if result.injected and result.message == message:
        raise AssertionError("injected, yet the message is unchanged")


GENUINE = tokens.issue_token(KEYRING, bytes(16), "example.com")


def token_verifier(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():  # a genuine token, edited: only its own spelling may verify
        at = provider.ConsumeIntInRange(0, len(GENUINE))
        cut = provider.ConsumeIntInRange(0, 2)
        text = GENUINE[:at] + provider.ConsumeUnicodeNoSurrogates(3) + GENUINE[at + cut :]
    else:
        text = provider.ConsumeUnicodeNoSurrogates(200)
    try:
        tokens.verify_token(KEYRING, text)
    except tokens.InvalidToken:
        return
    if text != GENUINE:
        raise AssertionError(f"another spelling of a token was accepted: {text!r}")


def link_rewriter(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    text = provider.ConsumeBool()
    message = provider.ConsumeBytes(provider.remaining_bytes())
    result = rewrite(message, lambda _url: "https://email.example.com/c/FUZZ", text=text)
    if (result.message != message) != (result.links > 0):
        raise AssertionError("the message changed exactly when no link was rewritten, or the reverse")


def click_token_verifier(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(400)
    try:
        tokens.verify_click_token(KEYRING, text)
    except tokens.InvalidToken:
        return
    raise AssertionError(f"a made-up click token was accepted: {text!r}")


FRAGMENTS = [
    b"<!--[if mso]>",
    b"<!--[if gte mso 9]><!-->",
    b"<!--",
    b"<![CDATA[",
    b'<a href="https://example.org/x">',
    b"; a=b",
    b'; a=";',
    b";;",
    b"\r\n_______________________________________________",
    b"PGh0bWw+PGJvZHk+eDwvYm9keT48L2h0bWw+\r\n",
]


def shapes(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    fragment = FRAGMENTS[provider.ConsumeIntInRange(0, len(FRAGMENTS) - 1)]
    count = provider.ConsumeIntInRange(0, 5000)
    text = provider.ConsumeBool()
    template = provider.ConsumeBytes(provider.remaining_bytes())
    at = len(template) // 2
    message = template[:at] + fragment * count + template[at:]
    injector_result = inject(message, PIXEL)
    if not injector_result.injected and injector_result.message != message:
        raise AssertionError("not injected, yet the message changed")
    result = rewrite(message, lambda _url: "https://email.example.com/c/FUZZ", text=text)
    if (result.message != message) != (result.links > 0):
        raise AssertionError("the message changed exactly when no link was rewritten, or the reverse")


TARGETS = {
    "injector": injector,
    "links": link_rewriter,
    "tokens": token_verifier,
    "click_tokens": click_token_verifier,
    "shapes": shapes,
}

if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
