"""Coverage-guided fuzzing (atheris) of the two parsers that see raw attacker input: the MIME injector
and the token verifier.

    python fuzz/fuzz_targets.py injector -runs=20000 -seed=1
    python fuzz/fuzz_targets.py tokens -runs=20000 -seed=1

A target fails (non-zero exit, with the crashing input saved) when the code raises anything it does not
promise to raise, or breaks a promise: the injector returns the input unchanged when it does not inject,
and puts exactly one pixel in when it does; the verifier only ever raises InvalidToken.
"""

import sys

import atheris

with atheris.instrument_imports():
    from opentracking import tokens
    from opentracking.injection import inject

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


def token_verifier(data: bytes) -> None:
    text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(200)
    try:
        tokens.verify_token(KEYRING, text)
    except tokens.InvalidToken:
        return
    raise AssertionError(f"a made-up token was accepted: {text!r}")


TARGETS = {"injector": injector, "tokens": token_verifier}

if __name__ == "__main__":
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
