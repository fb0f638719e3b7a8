"""The template's promises (DESIGN 4, the core issue), checked on the template itself."""

import json

from devstack.template import ROOT, load_template

T = load_template()
R = T["Resources"]


def of_type(kind: str) -> dict:
    return {name: res for name, res in R.items() if res["Type"] == kind}


def test_table_is_on_demand_recoverable_encrypted_expiring_and_streamed():
    (table,) = of_type("AWS::DynamoDB::Table").values()
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["StreamSpecification"]["StreamViewType"] in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")


def test_bucket_is_private_encrypted_expiring_and_tls_only():
    (bucket,) = of_type("AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert any(rule.get("ExpirationInDays") for rule in props["LifecycleConfiguration"]["Rules"])
    (policy,) = of_type("AWS::S3::BucketPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )


def _attached_policy(policy: dict) -> str | None:
    """The logical id of a policy defined in this template and attached with !Ref (optionally under !If)."""
    if "Fn::If" in policy:
        _condition, attached, otherwise = policy["Fn::If"]
        assert otherwise == {"Ref": "AWS::NoValue"}
        policy = attached
    reference = policy.get("Ref")
    return reference if reference in R and R[reference]["Type"] == "AWS::IAM::ManagedPolicy" else None


def test_functions_use_only_sam_policy_templates_our_own_policies_and_explicit_routes():
    for name, function in of_type("AWS::Serverless::Function").items():
        for policy in function["Properties"].get("Policies", []):
            assert isinstance(policy, dict), f"{name}: AWS managed policy names are not least privilege"
            assert "Statement" not in policy, f"{name}: inline statements instead of a SAM policy template"
            if _attached_policy(policy):
                continue
            if "Fn::If" in policy:  # a policy template only under a condition (an optional secret)
                _, policy, otherwise = policy["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}, (
                    f"{name}: a conditional policy grants something else"
                )
            (template_name,) = policy
            assert template_name.endswith("Policy")
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                path = event["Properties"]["Path"]
                assert "+}" not in path and path != "$default", f"{name}: catch-all route {path}"


def test_pixel_may_only_write():
    policies = R["PixelFunction"]["Properties"]["Policies"]
    assert {next(iter(p)) for p in policies} == {
        "DynamoDBWritePolicy",
        "AWSSecretsManagerGetSecretValuePolicy",
        "SQSSendMessagePolicy",  # the spill queue, nothing else
    }
    (send,) = [p["SQSSendMessagePolicy"] for p in policies if "SQSSendMessagePolicy" in p]
    assert send == {"QueueName": {"Fn::GetAtt": ["SpillQueue", "QueueName"]}}


def test_click_redirect_has_the_pixels_rights_and_nothing_more():
    click, pixel = R["ClickFunction"]["Properties"], R["PixelFunction"]["Properties"]
    assert click["Policies"] == pixel["Policies"]  # write the table, read the keys, spill; no reads
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in click["Events"].values()}
    assert routes == {("GET", "/c/{token}"), ("HEAD", "/c/{token}")}


def test_stream_consumer_receives_raw_clicks():
    filters = R["EventsFunction"]["Properties"]["Events"]["Stream"]["Properties"]["FilterCriteria"]["Filters"]
    assert any('"click"' in f["Pattern"] for f in filters)


def test_globals_carry_runtime_tracing_layer_and_powertools_settings():
    function = T["Globals"]["Function"]
    assert function["Runtime"] == "python3.13"
    assert function["Tracing"] == "Active"
    assert function["Layers"] == [{"Ref": "OpenTrackingLayer"}]
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"} <= set(
        function["Environment"]["Variables"]
    )


def test_layer_is_built_by_sam_from_pinned_requirements():
    (layer,) = of_type("AWS::Serverless::LayerVersion").values()
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    source = ROOT / layer["Properties"]["ContentUri"]
    assert not (source / "python").exists()
    requirements = [
        line
        for line in (source / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert requirements
    assert all("==" in line for line in requirements)


def test_secrets_are_generated_not_written_in_the_template():
    for secret in of_type("AWS::SecretsManager::Secret").values():
        assert "SecretString" not in secret["Properties"]
        assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32


def test_outputs_name_what_integration_tests_discover():
    assert {"ApiUrl", "TableName", "BucketName"} <= set(T["Outputs"])


def test_every_route_has_a_sample_event():
    events = {p.name for p in (ROOT / "events").glob("*.json")}
    assert {
        "submit_messages.json",
        "submit_mime.json",
        "pixel_get.json",
        "pixel_head.json",
        "click_get.json",
    } <= events


def _emitted_metric_names() -> set[str]:
    """The metrics the code publishes: every opentracking.core.metric_names.Metric it names."""
    import re

    from opentracking.core.metric_names import Metric

    sources = [
        *(ROOT / "layers" / "opentracking" / "opentracking").rglob("*.py"),
        *(ROOT / "functions").glob("*/app.py"),
    ]
    named = {name for path in sources for name in re.findall(r"\bMetric\.([A-Z_]+)\b", path.read_text())}
    return {Metric[name].value for name in named}


def test_every_metric_name_is_published_and_every_alarm_watches_one():
    from opentracking.core.metric_names import Metric

    # No name in the list that nothing publishes (a renamed metric leaves no stale entry behind)
    assert _emitted_metric_names() == {metric.value for metric in Metric}
    alarms = [r["Properties"] for r in R.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    ours = [alarm["MetricName"] for alarm in alarms if alarm.get("Namespace") == "OpenTracking"]
    assert {"TrackingDomainsUnhealthy", "OpenLost", "ClickLost"} <= set(ours)
    assert set(ours) <= _emitted_metric_names()


def test_alarm_watches_unhealthy_domains_and_notifies_the_topic():
    alarm = R["UnhealthyDomainsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("OpenTracking", "TrackingDomainsUnhealthy")
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "opentracking"}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
    assert alarm["MetricName"] in _emitted_metric_names()
    subscription = R["AlertEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_dashboard_is_valid_json_and_shows_only_metrics_the_code_emits():
    import json
    import re

    body = R["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    document = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    shown = set()
    for widget in document["widgets"]:
        for metric in widget["properties"].get("metrics", []):
            shown.update(part for part in metric[1:2] if part != ".")
    assert shown
    assert shown <= _emitted_metric_names()


def test_checker_runs_on_the_schedule_parameter():
    events = R["DnsHealthFunction"]["Properties"]["Events"]
    (schedule,) = [e for e in events.values() if e["Type"] == "Schedule"]
    assert schedule["Properties"]["Schedule"] == {"Ref": "HealthCheckRate"}


def test_our_own_policies_name_every_action_and_scope_every_resource():
    """No wildcard action anywhere; a "*" resource only where the service has no resource-level
    permission (ACM's RequestCertificate, only under conditions; SES's GetAccount, which reads the send
    rate)."""
    policies = of_type("AWS::IAM::ManagedPolicy")
    assert policies, "the tracking-hosts policy is defined in the template"
    for name, policy in policies.items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), f"{name}: wildcard action {actions}"
            if statement["Resource"] == "*" and actions == ["ses:GetAccount"]:
                continue
            if statement["Resource"] == "*":
                assert actions == ["acm:RequestCertificate"], f"{name}: {actions} on every resource"
                assert statement["Condition"]["StringEquals"]["acm:ValidationMethod"] == "DNS"


def test_tracking_hosts_policy_covers_exactly_the_calls_the_code_makes():
    """Each ACM and API Gateway call in tracking_hosts maps to an allowed action; nothing more is allowed."""
    import re

    source = (ROOT / "layers/opentracking/opentracking/domains/tracking_hosts.py").read_text()
    acm_calls = set(re.findall(r'client\("acm"\)\.(\w+)', source))
    api_calls = set(re.findall(r"(?:api|client\(\"apigatewayv2\"\))\.(\w+)\(", source))
    assert acm_calls == {
        "request_certificate",
        "describe_certificate",
        "get_certificate",
        "delete_certificate",
    }
    http_method = {"get": "GET", "create": "POST", "update": "PATCH", "delete": "DELETE"}
    needed = {f"acm:{''.join(part.title() for part in call.split('_'))}" for call in acm_calls}
    needed |= {f"apigateway:{http_method[call.split('_')[0]]}" for call in api_calls}
    statements = R["TrackingHostsPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allowed = set()
    for statement in statements:
        allowed |= set(
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    assert needed <= allowed
    assert allowed - needed == {"acm:AddTagsToCertificate"}  # ACM checks it for the tags on the request
    for function in ("ApiFunction", "DnsHealthFunction"):
        attached = [_attached_policy(p) for p in R[function]["Properties"]["Policies"]]
        assert "TrackingHostsPolicy" in attached
    others = set(of_type("AWS::Serverless::Function")) - {"ApiFunction", "DnsHealthFunction"}
    for function in others:
        attached = {_attached_policy(p) for p in R[function]["Properties"].get("Policies", [])}
        assert "TrackingHostsPolicy" not in attached


def test_only_the_sender_may_send_through_ses_and_only_what_it_calls():
    """The SES calls in delivery/ses.py map to the policy's actions (SendEmail with raw content is also
    checked as SendRawEmail), sending is scoped to the stack's configuration set and this account's
    identities, and no other function has the policy."""
    import re

    source = (ROOT / "layers/opentracking/opentracking/delivery/ses.py").read_text()
    calls = set(re.findall(r'client\("sesv2"\)\.(\w+)\(', source))
    assert calls == {"send_email", "get_account"}
    statements = R["SesSendingPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    allowed = {
        action
        for s in statements
        for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert allowed == {"ses:SendEmail", "ses:SendRawEmail", "ses:GetAccount"}
    (send,) = [s for s in statements if "ses:SendEmail" in s["Action"]]
    assert any("configuration-set/${SesConfigurationSet}" in json.dumps(r) for r in send["Resource"])
    holders = {
        name
        for name, function in of_type("AWS::Serverless::Function").items()
        if "SesSendingPolicy" in {_attached_policy(p) for p in function["Properties"].get("Policies", [])}
    }
    assert holders == {"SenderFunction"}
