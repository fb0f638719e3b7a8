"""Create the template's stateful resources (tables, buckets, secrets) against any endpoint: moto in
process for unit tests, moto server for the local stack. Functions, layers and APIs are not created:
the local stack calls the handlers in-process."""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any

import boto3

from devstack.template import Stack


def _physical_name(stack: Stack, logical_id: str, *, lowercase: bool = False) -> str:
    name = f"{stack.name}-{logical_id}"
    return name.lower() if lowercase else name


def create_table(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    ddb = session.client("dynamodb", endpoint_url=endpoint_url)
    name = props.get("TableName") or _physical_name(stack, logical_id)
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if props.get("StreamSpecification"):
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if props.get("SSESpecification"):
        kwargs["SSESpecification"] = {"Enabled": props["SSESpecification"].get("SSEEnabled", False)}
    description = ddb.create_table(**kwargs)["TableDescription"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        ddb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=pitr)
    stack.refs[logical_id] = name
    stack.attributes[(logical_id, "Arn")] = description["TableArn"]
    if description.get("LatestStreamArn"):
        stack.attributes[(logical_id, "StreamArn")] = description["LatestStreamArn"]


def create_bucket(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    s3 = session.client("s3", endpoint_url=endpoint_url)
    name = props.get("BucketName") or _physical_name(stack, logical_id, lowercase=True)
    if stack.region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": stack.region})
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "BucketEncryption" in props:
        # CloudFormation says ServerSideEncryptionByDefault where the S3 API says Apply...ByDefault.
        rules = [
            {
                (
                    "ApplyServerSideEncryptionByDefault" if key == "ServerSideEncryptionByDefault" else key
                ): value
                for key, value in rule.items()
            }
            for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "LifecycleConfiguration" in props:
        rules = []
        for rule in stack.resolve(props["LifecycleConfiguration"]["Rules"]):
            converted: dict[str, Any] = {
                "ID": rule.get("Id", "rule"),
                "Status": rule["Status"],
                "Filter": {"Prefix": rule.get("Prefix", "")},
            }
            if "ExpirationInDays" in rule:
                converted["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
            if "AbortIncompleteMultipartUpload" in rule:
                converted["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
            rules.append(converted)
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    stack.refs[logical_id] = name
    stack.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"


def create_bucket_policy(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    """Resolve the policy but do not attach it.

    moto has no transport context, so it treats the TLS-only statement's `aws:SecureTransport = false`
    condition as true and denies every request. The policy itself is checked by cfn-lint and by the
    template tests; the resolved document is kept for anyone who wants to inspect it.
    """
    bucket = stack.resolve(props["Bucket"])
    stack.attributes[(logical_id, "PolicyDocument")] = json.dumps(stack.resolve(props["PolicyDocument"]))
    stack.refs[logical_id] = bucket


def create_secret(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    """A generated secret, made the way Secrets Manager's GenerateSecretString makes it."""
    sm = session.client("secretsmanager", endpoint_url=endpoint_url)
    name = props.get("Name") or _physical_name(stack, logical_id)
    generate = props.get("GenerateSecretString")
    if generate:
        alphabet = string.ascii_letters + string.digits
        if not generate.get("ExcludePunctuation"):
            alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
        value = "".join(secrets.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
        if "SecretStringTemplate" in generate:
            document = json.loads(generate["SecretStringTemplate"])
            document[generate["GenerateStringKey"]] = value
            value = json.dumps(document)
    else:
        value = props["SecretString"]
    arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
    stack.refs[logical_id] = arn


def create_queue(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    sqs = session.client("sqs", endpoint_url=endpoint_url)
    name = props.get("QueueName") or _physical_name(stack, logical_id)
    attributes = {
        # JSON for policies and booleans (SqsManagedSseEnabled: true -> "true"), as CloudFormation sends them.
        key: (json.dumps(value) if isinstance(value, dict | bool) else str(value))
        for key, value in stack.resolve(
            {k: v for k, v in props.items() if k not in ("QueueName", "Tags")}
        ).items()
    }
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stack.refs[logical_id] = url
    stack.attributes[(logical_id, "Arn")] = arn
    stack.attributes[(logical_id, "QueueName")] = name
    stack.attributes[(logical_id, "QueueUrl")] = url


def create_http_api(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    """The HTTP API itself, so that API mappings of per-domain custom domains have an API to point at.
    Its routes are served by the local stack's own server, not by moto."""
    api = session.client("apigatewayv2", endpoint_url=endpoint_url)
    created = api.create_api(Name=_physical_name(stack, logical_id), ProtocolType="HTTP")
    stack.refs[logical_id] = created["ApiId"]


def create_configuration_set(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    """An SES configuration set. Its event destination (EventBridge, the default bus) is not created: moto
    has none, and the local SES (devstack.ses_simulator) publishes every configuration set's reports there,
    as the template's destination does."""
    name = props.get("Name") or _physical_name(stack, logical_id)
    session.client("sesv2", endpoint_url=endpoint_url).create_configuration_set(ConfigurationSetName=name)
    stack.refs[logical_id] = name


def create_event_rule(
    stack: Stack, logical_id: str, props: dict, session: boto3.session.Session, endpoint_url: str | None
) -> None:
    """An EventBridge rule on the default bus with its targets (moto delivers matching events to queues)."""
    events = session.client("events", endpoint_url=endpoint_url)
    name = props.get("Name") or _physical_name(stack, logical_id)
    pattern = json.dumps(stack.resolve(props["EventPattern"]))
    arn = events.put_rule(Name=name, EventPattern=pattern, State="ENABLED")["RuleArn"]
    targets = [{"Id": t["Id"], "Arn": stack.resolve(t["Arn"])} for t in props.get("Targets", [])]
    if targets:
        events.put_targets(Rule=name, Targets=targets)
    stack.refs[logical_id] = name
    stack.attributes[(logical_id, "Arn")] = arn


CREATORS = {
    "AWS::Serverless::HttpApi": create_http_api,
    "AWS::DynamoDB::Table": create_table,
    "AWS::S3::Bucket": create_bucket,
    "AWS::SecretsManager::Secret": create_secret,
    "AWS::SQS::Queue": create_queue,
    "AWS::SES::ConfigurationSet": create_configuration_set,
    "AWS::Events::Rule": create_event_rule,
}
# Resources that depend on others are created after them.
DEPENDENT_CREATORS = {"AWS::S3::BucketPolicy": create_bucket_policy}


def _references(value: Any) -> set[str]:
    """Logical ids a property value points at (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    if isinstance(value, list):
        return set().union(*(_references(item) for item in value))
    if not isinstance(value, dict):
        return set()
    found: set[str] = set()
    for key, arg in value.items():
        if key == "Ref" and isinstance(arg, str):
            found.add(arg)
        elif key == "Fn::GetAtt":
            found.add(arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
        elif key == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            found.update(name.split(".", 1)[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text))
            found |= set() if isinstance(arg, str) else _references(arg[1])
        else:
            found |= _references(arg)
    return found


def _in_dependency_order(resources: dict[str, dict]) -> list[str]:
    """Logical ids with every resource after those its properties reference (a dead-letter queue before
    the queue whose RedrivePolicy names it), otherwise in template order."""
    ordered: list[str] = []

    def visit(logical_id: str, path: tuple[str, ...]) -> None:
        if logical_id in ordered or logical_id not in resources:
            return
        if logical_id in path:
            raise ValueError(f"circular reference through {' -> '.join((*path, logical_id))}")
        for dependency in sorted(_references(resources[logical_id].get("Properties", {}))):
            visit(dependency, (*path, logical_id))
        ordered.append(logical_id)

    for logical_id in resources:
        visit(logical_id, ())
    return ordered


def provision(
    stack: Stack, session: boto3.session.Session | None = None, endpoint_url: str | None = None
) -> Stack:
    session = session or boto3.session.Session(region_name=stack.region)
    for creators in (CREATORS, DEPENDENT_CREATORS):
        for logical_id in _in_dependency_order(stack.resources):
            resource = stack.resources[logical_id]
            creator = creators.get(resource["Type"])
            if creator:
                creator(stack, logical_id, resource.get("Properties", {}), session, endpoint_url)
    return stack
