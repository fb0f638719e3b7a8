"""Reading `template.yaml` with a loader that understands CloudFormation tags (cfn-lint's), and resolving
the intrinsics the local stack needs (Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::If with the template's
Conditions, AWS::NoValue) against local resources."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
# `Ref: AWS::NoValue`: the property (or list item) holding it is left out, as in CloudFormation.
NO_VALUE = object()


def _plain(value: Any) -> Any:
    """cfn-lint's node classes -> plain dicts, lists and strings."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return str(value)
    return value


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict:
    template, problems = decode_str(path.read_text())
    if problems or template is None:
        raise ValueError(f"cannot parse {path}: {problems}")
    return _plain(template)


@dataclass
class Stack:
    """A template plus what each logical id resolves to locally."""

    name: str = "opentracking-local"
    region: str = "us-east-1"
    account: str = "123456789012"
    template: dict = field(default_factory=load_template)
    refs: dict[str, str] = field(default_factory=dict)  # logical id -> Ref value (name or ARN)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)  # (logical id, attr) -> value
    parameter_overrides: dict[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, dict]:
        return self.template["Resources"]

    def resources_of_type(self, kind: str) -> dict[str, dict]:
        return {lid: res for lid, res in self.resources.items() if res["Type"] == kind}

    def parameter(self, name: str) -> str:
        if name in self.parameter_overrides:
            return self.parameter_overrides[name]
        return str(self.template.get("Parameters", {})[name].get("Default", ""))

    def pseudo(self, name: str) -> str | None:
        return {
            "AWS::StackName": self.name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
        }.get(name)

    def ref(self, name: str) -> str:
        pseudo = self.pseudo(name)
        if pseudo is not None:
            return pseudo
        if name in self.template.get("Parameters", {}):
            return self.parameter(name)
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"{name} has no local value (is it created by the local stack?)")

    def get_att(self, logical_id: str, attribute: str) -> str:
        try:
            return self.attributes[(logical_id, attribute)]
        except KeyError:
            raise KeyError(f"{logical_id}.{attribute} has no local value") from None

    def condition(self, name: str) -> bool:
        return self._holds(self.template.get("Conditions", {})[name])

    def _holds(self, expression: Any) -> bool:
        ((key, arg),) = expression.items()
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::Equals":
            left, right = self.resolve(arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self._holds(arg[0])
        if key == "Fn::And":
            return all(self._holds(item) for item in arg)
        if key == "Fn::Or":
            return any(self._holds(item) for item in arg)
        raise ValueError(f"unsupported condition function {key}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::If":
                condition, if_true, if_false = arg
                return self.resolve(if_true if self.condition(condition) else if_false)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
                return self._sub(text, variables)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(str(item) for item in self.resolve(items))
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _sub(self, text: str, variables: dict) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^!}][^}]*)\}", replace, text)

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals.Function.Environment merged with the function's own, intrinsics resolved."""
        globals_env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {})
        own_env = self.resources[logical_id].get("Properties", {}).get("Environment", {})
        merged = self.resolve({**globals_env.get("Variables", {}), **own_env.get("Variables", {})})
        return {name: str(value) for name, value in merged.items()}

    def functions(self) -> dict[str, dict]:
        return self.resources_of_type("AWS::Serverless::Function")
