"""The injector's public import path (DESIGN.md, "The injector"): `from opentracking.injection import inject`.

The code is `opentracking.mail.injection`; this name stays for the library's users and the tests that
hold the contract.
"""

from opentracking.mail.injection import InjectionResult, inject, inject_html

__all__ = ["InjectionResult", "inject", "inject_html"]
