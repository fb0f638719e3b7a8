"""Shared fixtures. Fake credentials and region are set before anything creates a boto3 client."""

from __future__ import annotations

import os

import pytest

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "opentracking",
        "POWERTOOLS_METRICS_NAMESPACE": "OpenTracking",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
)
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(_name, None)


def reset_caches() -> None:
    from opentracking.core import aws
    from opentracking.core.config import settings
    from opentracking.delivery import sender
    from opentracking.http import gateway
    from opentracking.messages import copies
    from opentracking.reporting import tag_limits
    from opentracking.tracking import tokens
    from opentracking.webhooks import delivery

    aws.reset_clients()
    tokens.reset_cache()
    gateway.reset_cache()
    delivery.reset_cache()
    sender.reset_cache()
    copies.reset_cache()
    tag_limits.reset_cache()
    settings.cache_clear()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    """moto in-process with every stateful resource of template.yaml; env set as Lambda would set it. moto
    is taught what the local stack teaches it (devstack.moto_fidelity), so every test sees the same AWS."""
    from moto import mock_aws

    from devstack import moto_fidelity, ses_simulator
    from devstack.provision import provision
    from devstack.template import Stack

    moto_fidelity.apply()
    ses_simulator.apply()
    with mock_aws():
        stack = provision(Stack())
        # Every function's environment, as the local stack runs them in one process (devstack.runtime).
        for logical_id in stack.functions():
            for name, value in stack.function_environment(logical_id).items():
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        # As the local stack runs: one shared CNAME target. Tests of per-domain certificates and custom
        # domains switch to CustomDomains themselves.
        monkeypatch.setenv("TRACKING_HOSTS", "SharedTarget")
        # As the local stack runs by default: nothing sent. Tests of delivery choose their transport.
        monkeypatch.setenv("DELIVERY_TRANSPORT", "none")
        # SES's reports published before SendEmail returns, so a test reads them at once.
        monkeypatch.setenv("LOCAL_SES_REPORT_SECONDS", "0")
        reset_caches()
        yield stack
        reset_caches()


@pytest.fixture
def tracked_domain(aws) -> str:
    """example.com with a valid tracking CNAME (as verify records it) and open tracking on."""
    from opentracking.domains import registry

    registry.put(
        registry.Domain(
            name="example.com",
            cname_target="t.example",
            tracking_ready=True,
            cname_valid="valid",
            open_tracking=True,
        )
    )
    return "example.com"


@pytest.fixture
def api_key(aws) -> str:
    """The account key this deployment generated (ApiKeysSecret)."""
    import json

    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=aws.ref("ApiKeysSecret"))
    return json.loads(secret["SecretString"])["account"]


@pytest.fixture
def basic_auth(api_key) -> str:
    import base64

    return "Basic " + base64.b64encode(f"api:{api_key}".encode()).decode()


@pytest.fixture
def invoke(aws, basic_auth, lambda_context):
    """Call a function's handler in-process with an HTTP API event, as API Gateway would:
    invoke("api", "GET", "/v4/domains") -> (status, JSON body); `fields` are sent as a form, `json_body`
    as JSON. The route key and the path parameters come
    from template.yaml's routes (tests.helpers.invoke); a `route` or `params` given must agree with them,
    and `function` must be the one the template routes the request to.
    Authenticated with the account key unless `authorization` says otherwise (None: no header)."""
    import base64
    import json
    from urllib.parse import urlencode

    from devstack.handlers import load_handler
    from tests.helpers.invoke import api_event, function_for

    def call(
        function,
        method,
        path,
        *,
        route=None,
        params=None,
        query="",
        fields=None,
        json_body=None,
        headers=None,
        authorization=basic_auth,
    ):
        body = urlencode(fields).encode() if fields is not None else None
        all_headers = {
            **({"authorization": authorization} if authorization is not None else {}),
            **(headers or {}),
        }
        if body is not None:
            all_headers["content-type"] = "application/x-www-form-urlencoded"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers["content-type"] = "application/json"
        event = api_event(method, path, query=query, headers=all_headers, body=body)
        assert route is None or event["routeKey"] == f"{method} {route}", event["routeKey"]
        assert params is None or event["pathParameters"] == params, event["pathParameters"]
        assert function_for(event) == f"functions/{function}", function_for(event)
        response = load_handler(f"functions/{function}").lambda_handler(event, lambda_context)
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            return response["statusCode"], base64.b64decode(body)  # the pixel's GIF
        return response["statusCode"], json.loads(body)

    return call


@pytest.fixture
def lambda_context():
    from devstack.events import LambdaContext

    return LambdaContext()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory):
    """The whole local stack (`make run`) as its own process on free loopback ports, for the integration
    and end-to-end tiers."""
    from devstack.process import leaked_tokens, start_stack

    stack = start_stack(tmp_path_factory.mktemp("local-stack"))
    yield stack
    # After every test that used it (the browser's opens and clicks among them): no line it logged names a
    # token of a copy it stored (SECURITY.md: no token in any log line).
    tokens = stack.issued_tokens()
    assert stack.stop() == 0, "\n".join(stack.output[-40:])
    leaked = leaked_tokens(stack.output, tokens)
    assert not leaked, f"{len(leaked)} lines of the local stack's log name a token, such as: {leaked[0]}"


# --- parallel runs -------------------------------------------------------------------------------
# `make test` runs the tiers on pytest-xdist workers (TEST_WORKERS). Unit tests are handed out one by one. A
# file of the other tiers stays on one worker, so its module-scoped stacks start once. The sam local tier
# is one unit of work: its Docker engine (and the base image it builds) is one per work tree, and two
# workers starting it at once would fight over it. (xdist's own loadgroup marks do not group under
# pytest 9, which no longer reads the node id xdist rewrites.)
def work_unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    tier = path.split("/")[1] if path.startswith("tests/") and path.count("/") >= 2 else ""
    if tier == "samlocal":
        return "tests/samlocal"
    return nodeid if tier == "unit" else path


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return TierScheduling(config, log)


# --- time per tier -------------------------------------------------------------------------------
# Every run ends with the seconds each tier took (setup, call and teardown of its tests), so a CI log shows
# where its budget goes without a separate measurement.
_seconds_per_tier: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
    _seconds_per_tier[tier] = _seconds_per_tier.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    if _seconds_per_tier:
        listed = ", ".join(f"{tier} {seconds:.0f} s" for tier, seconds in sorted(_seconds_per_tier.items()))
        terminalreporter.write_line(f"time per tier: {listed}")
