"""What Kubernetes NetworkPolicies allow, evaluated over manifests (no cluster, no CNI).

Answers "can endpoint A open a connection to endpoint B on port P/protocol" the way the
NetworkPolicy API defines it (https://kubernetes.io/docs/concepts/services-networking/network-policies/):

- A pod is isolated for ingress (egress) once any policy in its namespace selects it with
  ``Ingress`` (``Egress``) in its ``policyTypes``; ``policyTypes`` defaults to ``Ingress`` plus
  ``Egress`` when it has at least one egress rule. A connection needs both ends to allow it: the
  source's egress and the destination's ingress. Policies are additive (a union of allows).
- A rule's peers: ``podSelector`` alone means pods of the policy's own namespace;
  ``namespaceSelector`` alone, every pod of the matching namespaces; both, the matching pods of
  the matching namespaces; ``ipBlock``, addresses in a CIDR minus its ``except``. A rule without
  peers matches every source (destination); a rule without ports, every port.
- A port is a number or a name, resolved against the destination pod's container ports, with
  ``protocol`` (TCP by default) and an optional ``endPort`` range.
- Label selectors: ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists, DoesNotExist);
  ``{}`` selects everything.

Endpoints outside the cluster's pod network (the API server) have no namespace and are matched
by ``ipBlock`` only; their own side is never isolated.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Port:
    number: int
    protocol: str = "TCP"
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.number}" if self.protocol == "TCP" else f"{self.number}/{self.protocol}"


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str | None  # None: outside the pod network (matched by ipBlock only)
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    ip: str = "192.0.2.1"  # pods get addresses no test CIDR names unless one says so


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in {"In", "NotIn", "Exists", "DoesNotExist"}:
            raise ValueError(f"unknown selector operator {operator}")
    return True


def policy_types(policy: Manifest) -> list[str]:
    # As the API server defaults them (SetDefaults_NetworkPolicySpec): an absent or empty list is
    # Ingress, plus Egress when there is at least one egress rule.
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


class Cluster:
    def __init__(
        self, policies: Iterable[Manifest], namespace_labels: Mapping[str, Mapping[str, str]]
    ) -> None:
        self.policies = [p for p in policies if p["kind"] == "NetworkPolicy"]
        for policy in self.policies:
            assert policy["metadata"].get("namespace"), "give every policy its namespace"
        self.namespace_labels = namespace_labels

    def _ns_labels(self, namespace: str) -> Mapping[str, str]:
        # The API server sets kubernetes.io/metadata.name on every namespace.
        return {
            "kubernetes.io/metadata.name": namespace,
            **self.namespace_labels.get(namespace, {}),
        }

    def _selecting(self, endpoint: Endpoint, direction: str) -> list[Manifest]:
        if endpoint.namespace is None:
            return []
        return [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == endpoint.namespace
            and direction in policy_types(p)
            and selector_matches(p["spec"].get("podSelector", {}), endpoint.labels)
        ]

    def _peer_matches(self, peer: Manifest, policy_namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            address = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            if address not in ipaddress.ip_network(block["cidr"]):
                return False
            return not any(address in ipaddress.ip_network(c) for c in block.get("except", []))
        if other.namespace is None:
            return False
        if "namespaceSelector" in peer:
            if not selector_matches(peer["namespaceSelector"], self._ns_labels(other.namespace)):
                return False
        elif other.namespace != policy_namespace:
            return False
        return "podSelector" not in peer or selector_matches(peer["podSelector"], other.labels)

    @staticmethod
    def _port_matches(entries: list[Manifest] | None, port: Port, destination: Endpoint) -> bool:
        if not entries:
            return True
        for entry in entries:
            if entry.get("protocol", "TCP") != port.protocol:
                continue
            wanted = entry.get("port")
            if wanted is None:
                return True
            if isinstance(wanted, str):
                named = {p.name: p for p in destination.ports if p.name}
                if wanted in named and named[wanted] == port:
                    return True
                continue
            if wanted <= port.number <= entry.get("endPort", wanted):
                return True
        return False

    def _allowed(
        self, endpoint: Endpoint, direction: str, other: Endpoint, port: Port, dest: Endpoint
    ) -> bool:
        policies = self._selecting(endpoint, direction)
        if not policies:
            return True  # not isolated in this direction
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key) or []
                if peers and not any(
                    self._peer_matches(p, policy["metadata"]["namespace"], other) for p in peers
                ):
                    continue
                if self._port_matches(rule.get("ports"), port, dest):
                    return True
        return False

    def can_reach(self, source: Endpoint, destination: Endpoint, port: Port) -> bool:
        """Whether ``source`` may open a connection to ``destination`` on ``port``."""
        assert port in destination.ports, f"{destination.name} does not listen on {port}"
        return self._allowed(source, "Egress", destination, port, destination) and self._allowed(
            destination, "Ingress", source, port, destination
        )

    def matrix(self, endpoints: Iterable[Endpoint], governed: set[str]) -> dict[str, set[str]]:
        """Every allowed (source -> destination:port) between distinct endpoints where at least
        one end is in a ``governed`` namespace: source name -> {"destination:port"}."""
        endpoints = list(endpoints)
        allowed: dict[str, set[str]] = {}
        for source in endpoints:
            for destination in endpoints:
                if source is destination:
                    continue
                if source.namespace not in governed and destination.namespace not in governed:
                    continue
                for port in destination.ports:
                    if self.can_reach(source, destination, port):
                        allowed.setdefault(source.name, set()).add(f"{destination.name}:{port}")
        return allowed


def pods_of(manifests: Iterable[Manifest], namespace: str) -> list[Endpoint]:
    """One endpoint per Deployment or Job: its pod template's labels and container ports,
    named by its app.kubernetes.io/component label (or, failing that, its own name)."""
    found = []
    for manifest in manifests:
        if manifest["kind"] not in {"Deployment", "Job"}:
            continue
        template = manifest["spec"]["template"]
        labels = template["metadata"]["labels"]
        ports = tuple(
            Port(p["containerPort"], p.get("protocol", "TCP"), p.get("name"))
            for container in template["spec"]["containers"]
            for p in container.get("ports", [])
        )
        name = labels.get("app.kubernetes.io/component", manifest["metadata"]["name"])
        if name == "inference":
            name = f"runtime-{labels['app.kubernetes.io/name']}"
        found.append(
            Endpoint(name, manifest["metadata"].get("namespace", namespace), labels, ports)
        )
    return found
