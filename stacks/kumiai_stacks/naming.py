"""Names, labels and fixed values shared by the components and the isolation rules. Pure: no Pulumi here."""

from __future__ import annotations

from kumiai.catalogue import Segment

LABEL_PREFIX = "kumiai.io"
LABEL_TOWN = f"{LABEL_PREFIX}/town"
LABEL_SEGMENT = f"{LABEL_PREFIX}/segment"
LABEL_SITE = f"{LABEL_PREFIX}/site"
LABEL_CODE = f"{LABEL_PREFIX}/code"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kumiai"

# Pod Security admission: every tenant namespace enforces, audits and warns at `restricted`, each pinned to a
# Kubernetes minor version so that a cluster upgrade cannot silently change what is allowed.
PSS_LEVEL = "restricted"
PSS_VERSION = "v1.30"
PSS_MODES = ("enforce", "audit", "warn")


def pss_labels() -> dict[str, str]:
    labels: dict[str, str] = {}
    for mode in PSS_MODES:
        labels[f"pod-security.kubernetes.io/{mode}"] = PSS_LEVEL
        labels[f"pod-security.kubernetes.io/{mode}-version"] = PSS_VERSION
    return labels


# The site platform's own namespace.
SYSTEM_NAMESPACE = "kumiai-system"

# Cluster DNS as every conformant cluster labels it; the only peer outside its own segment a tenant pod may reach
# besides its database.
DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
DNS_PORT = 53
DB_PORT = 5432
DB_SERVICE = "db"

# What a town's ops group may do inside its own namespaces. Listed explicitly: no wildcards, no RBAC objects
# (so no bind, escalate or impersonate), nothing cluster-scoped, and no Secrets: workloads get theirs mounted,
# people do not read them.
OPS_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("",),
        ("pods", "pods/log", "services", "endpoints", "configmaps", "persistentvolumeclaims", "events"),
        ("get", "list", "watch"),
    ),
    (("",), ("configmaps", "services", "persistentvolumeclaims"), ("create", "update", "patch", "delete")),
    (("",), ("pods",), ("delete",)),
    (("apps",), ("deployments", "statefulsets", "replicasets"), ("get", "list", "watch")),
    (("apps",), ("deployments", "statefulsets"), ("create", "update", "patch", "delete")),
    (("apps",), ("deployments/scale", "statefulsets/scale"), ("get", "update", "patch")),
    (("batch",), ("jobs", "cronjobs"), ("get", "list", "watch", "create", "update", "patch", "delete")),
)

FORBIDDEN_VERBS = frozenset({"*", "bind", "escalate", "impersonate"})


def namespace_name(town_id: str, segment: Segment | str) -> str:
    return f"{town_id}-{Segment(segment).value}"


def ops_group(consortium: str, town_id: str) -> str:
    """The identity-provider group of a town's IT staff, e.g. kumiai:kanagawa:hayama:ops."""
    return f"kumiai:{consortium}:{town_id}:ops"


def db_host(town_id: str, site_id: str, consortium: str) -> str:
    """Stable DNS name of a town's database at a site, published by the data layer at that site."""
    return f"{town_id}.db.{site_id}.{consortium}.internal"
