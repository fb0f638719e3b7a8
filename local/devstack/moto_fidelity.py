"""Where moto answers less than AWS does, for the AWS calls per-domain tracking hosts rely on.

moto's API Gateway v2 echoes a custom domain's configuration back as it was sent, so the fields AWS adds
(the target hostname the tracking CNAME must point at, the Route 53 hosted zone, the status) are missing,
and it does not implement UpdateDomainName at all. Our code never invents those values (it reports the
state as unknown without them), so the local stack and the tests of the full state machine teach moto to
answer as AWS documents:

- a regional custom domain's target is `d-<10 characters>.execute-api.<region>.amazonaws.com`, random per
  domain, with the region's API Gateway hosted zone and the status AVAILABLE;
- UpdateDomainName replaces the certificate of an existing custom domain and keeps its target.

`apply()` is idempotent and patches moto in this process (in-process mocks and a ThreadedMotoServer alike).
"""

from __future__ import annotations

import json
import secrets
import string

# API Gateway's regional endpoints' hosted zones (AWS General Reference, "Amazon API Gateway endpoints").
REGIONAL_HOSTED_ZONES = {"us-east-1": "Z1UJRXOUMOOFQ8"}
_ALPHABET = string.ascii_lowercase + string.digits
_applied = False


def _target(region: str) -> str:
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"d-{suffix}.execute-api.{region}.amazonaws.com"


def apply() -> None:
    global _applied
    if _applied:
        return
    from moto.apigatewayv2 import models, responses

    original_init = models.DomainName.__init__

    def init(self, domain_name, domain_name_configurations, mutual_tls_authentication, tags, backend):
        original_init(self, domain_name, domain_name_configurations, mutual_tls_authentication, tags, backend)
        for configuration in self.domain_name_configurations:
            if configuration.get("endpointType", "REGIONAL") == "REGIONAL":
                configuration.setdefault("apiGatewayDomainName", _target(backend.region_name))
                zone = REGIONAL_HOSTED_ZONES.get(backend.region_name)
                if zone:
                    configuration.setdefault("hostedZoneId", zone)
                configuration.setdefault("domainNameStatus", "AVAILABLE")

    def update_domain_name(self, domain_name: str, domain_name_configurations: list[dict]):
        domain = self.get_domain_name(domain_name)
        kept = {"apiGatewayDomainName", "hostedZoneId", "domainNameStatus"}
        for current, change in zip(
            domain.domain_name_configurations, domain_name_configurations, strict=False
        ):
            current.update({key: value for key, value in change.items() if key not in kept})
        return domain

    def update_domain_name_response(self):
        params = json.loads(self.body)
        domain = self.apigatewayv2_backend.update_domain_name(
            self.path.split("/")[-1], params.get("domainNameConfigurations", [])
        )
        return 200, {}, json.dumps(domain.to_json())

    models.DomainName.__init__ = init
    models.ApiGatewayV2Backend.update_domain_name = update_domain_name
    responses.ApiGatewayV2Response.update_domain_name = update_domain_name_response
    _applied = True
