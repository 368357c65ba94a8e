"""tests/netpol.py, the NetworkPolicy evaluator the chart's matrix test relies on, against the
cases of the Kubernetes documentation (network-policies concept page) that the chart's policies
do not all exercise."""

from __future__ import annotations

from typing import Any

import pytest

from tests.netpol import Cluster, Endpoint, Port, policy_types, selector_matches

WEB = Endpoint("web", "shop", {"app": "web"}, (Port(8080, name="http"), Port(9090)))
DB = Endpoint("db", "shop", {"app": "db", "tier": "data"}, (Port(5432), Port(5433)))
OTHER = Endpoint("other", "lab", {"app": "web"}, (Port(8080, name="http"),))
OUTSIDE = Endpoint("outside", None, ports=(Port(443),), ip="198.51.100.7")


def policy(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": spec,
    }


def cluster(*specs: tuple[str, dict[str, Any]]) -> Cluster:
    return Cluster([policy(ns, s) for ns, s in specs], {"lab": {"team": "research"}})


def test_no_policy_means_everything_is_open() -> None:
    assert cluster().can_reach(WEB, DB, Port(5432))


def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() -> None:
    assert policy_types(policy("x", {"podSelector": {}})) == ["Ingress"]
    assert policy_types({"spec": {"egress": []}}) == ["Ingress"]  # no rule, no egress type
    assert policy_types({"spec": {"egress": [{}]}}) == ["Ingress", "Egress"]
    assert policy_types({"spec": {"policyTypes": [], "egress": [{}]}}) == ["Ingress", "Egress"]
    assert policy_types({"spec": {"policyTypes": ["Egress"]}}) == ["Egress"]


def test_ingress_isolation_needs_an_allow_and_egress_is_untouched() -> None:
    deny = cluster(("shop", {"podSelector": {"matchLabels": {"app": "db"}}}))
    assert not deny.can_reach(WEB, DB, Port(5432))
    assert deny.can_reach(DB, WEB, Port(9090))  # db's egress is not isolated


def test_both_ends_must_allow() -> None:
    ingress = ("shop", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]})
    deny_egress = (
        "shop",
        {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]},
    )
    assert cluster(ingress).can_reach(WEB, DB, Port(5432))
    assert not cluster(ingress, deny_egress).can_reach(WEB, DB, Port(5432))


def test_pod_selector_peers_are_of_the_policys_namespace_only() -> None:
    rule = {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}
    c = cluster(("shop", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [rule]}))
    assert c.can_reach(WEB, DB, Port(5432))
    assert not c.can_reach(OTHER, DB, Port(5432))  # same labels, another namespace


def test_namespace_and_pod_selector_in_one_peer_is_and_in_two_peers_is_or() -> None:
    both = {"namespaceSelector": {"matchLabels": {"team": "research"}}, "podSelector": {}}
    target = {"podSelector": {"matchLabels": {"app": "db"}}}
    c = cluster(("shop", {**target, "ingress": [{"from": [both]}]}))
    assert c.can_reach(OTHER, DB, Port(5432))
    assert not c.can_reach(WEB, DB, Port(5432))  # its namespace is not research's
    narrow = {
        "namespaceSelector": {"matchLabels": {"team": "research"}},
        "podSelector": {"matchLabels": {"app": "db"}},
    }
    assert not cluster(("shop", {**target, "ingress": [{"from": [narrow]}]})).can_reach(
        OTHER, DB, Port(5432)
    )
    either = [{"namespaceSelector": {"matchLabels": {"team": "research"}}}, {"podSelector": {}}]
    c = cluster(("shop", {**target, "ingress": [{"from": either}]}))
    assert c.can_reach(OTHER, DB, Port(5432)) and c.can_reach(WEB, DB, Port(5432))


def test_every_namespace_has_its_name_label() -> None:
    by_name = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "lab"}}}
    c = cluster(("shop", {"podSelector": {}, "ingress": [{"from": [by_name]}]}))
    assert c.can_reach(OTHER, DB, Port(5432))
    assert not c.can_reach(WEB, DB, Port(5432))


def test_ports_numbers_ranges_protocols_and_names() -> None:
    def ports(entries: list[dict[str, Any]]) -> Cluster:
        return cluster(("shop", {"podSelector": {}, "ingress": [{"ports": entries}]}))

    assert ports([{"port": 5432}]).can_reach(WEB, DB, Port(5432))
    assert not ports([{"port": 5432}]).can_reach(WEB, DB, Port(5433))
    assert ports([{"port": 5430, "endPort": 5433}]).can_reach(WEB, DB, Port(5433))
    assert not ports([{"port": 5432, "protocol": "UDP"}]).can_reach(WEB, DB, Port(5432))
    # a named port resolves on the destination: web's "http" is 8080, db has none
    assert ports([{"port": "http"}]).can_reach(DB, WEB, Port(8080, name="http"))
    assert not ports([{"port": "http"}]).can_reach(DB, WEB, Port(9090))
    assert not ports([{"port": "http"}]).can_reach(WEB, DB, Port(5432))
    # a protocol without a port is every port of it
    assert ports([{"protocol": "TCP"}]).can_reach(WEB, DB, Port(5433))


def test_ip_blocks_with_exceptions_match_addresses_not_pods() -> None:
    def egress(block: dict[str, Any]) -> Cluster:
        return cluster(
            (
                "shop",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": block}]}],
                },
            )
        )

    assert egress({"cidr": "198.51.100.0/24"}).can_reach(WEB, OUTSIDE, Port(443))
    assert not egress({"cidr": "198.51.100.0/24", "except": ["198.51.100.0/29"]}).can_reach(
        WEB, OUTSIDE, Port(443)
    )
    assert not egress({"cidr": "203.0.113.0/24"}).can_reach(WEB, OUTSIDE, Port(443))
    # pods are addressed too: a pod outside the block is refused
    assert not egress({"cidr": "198.51.100.0/24"}).can_reach(WEB, DB, Port(5432))


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ({"key": "tier", "operator": "In", "values": ["data", "cache"]}, True),
        ({"key": "tier", "operator": "NotIn", "values": ["data"]}, False),
        ({"key": "zone", "operator": "NotIn", "values": ["a"]}, True),  # absent key: not in
        ({"key": "tier", "operator": "Exists"}, True),
        ({"key": "tier", "operator": "DoesNotExist"}, False),
    ],
)
def test_match_expressions(expression: dict[str, Any], matches: bool) -> None:
    assert selector_matches({"matchExpressions": [expression]}, DB.labels) is matches


def test_an_empty_selector_selects_everything() -> None:
    assert selector_matches({}, {}) and selector_matches({}, DB.labels)
