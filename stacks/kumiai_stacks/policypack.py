"""The isolation rules as a Pulumi PolicyPack, so that the engine path enforces what `kumiai plan` checks.

Each rule of kumiai_stacks.rules becomes one mandatory stack policy; the rule code is the same, only the adapter
from the engine's view of a resource (type, name, props) to ours (type, name, inputs) is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    StackValidationArgs,
    StackValidationPolicy,
)

from kumiai_stacks.rules import RULES, Rule, View

PACK_NAME = "kumiai-isolation"


def resources_of(args: StackValidationArgs) -> list[dict[str, Any]]:
    return [{"type": r.resource_type, "name": r.name, "inputs": dict(r.props)} for r in args.resources]


def validator(rule: Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for violation in rule.check(View(resources_of(args))):
            report_violation(str(violation), None)

    return validate


def policies() -> list[StackValidationPolicy]:
    return [
        StackValidationPolicy(
            name=f"kumiai-{rule.name}",
            description=rule.description,
            validate=validator(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for rule in RULES
    ]


def serve() -> None:
    """Start the policy analyzer (the engine launches stacks/policy/__main__.py, which calls this)."""
    PolicyPack(name=PACK_NAME, policies=list(policies()), enforcement_level=EnforcementLevel.MANDATORY)
