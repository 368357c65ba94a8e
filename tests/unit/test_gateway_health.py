"""The health summary's arithmetic: metrics read from Prometheus text, and p95 between two
scrapes as Prometheus's ``histogram_quantile`` computes it."""

from __future__ import annotations

import math

import pytest

from kubemate_gateway.health import quantile, read_scrape

GATEWAY = """\
# TYPE http_requests_total counter
http_requests_total{route="/v1/{path:path}",service="gateway",status="200"} 90.0
http_requests_total{route="/v1/{path:path}",service="gateway",status="503"} 10.0
http_requests_total{route="/metrics",service="gateway",status="200"} 500.0
http_requests_total{route="/v1/query",service="retrieval",status="200"} 70.0
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1",route="/v1/{path:path}",service="gateway"} 60.0
http_request_duration_seconds_bucket{le="0.5",route="/v1/{path:path}",service="gateway"} 90.0
http_request_duration_seconds_bucket{le="+Inf",route="/v1/{path:path}",service="gateway"} 100.0
http_request_duration_seconds_bucket{le="0.1",route="/readyz",service="gateway"} 999.0
http_request_duration_seconds_bucket{le="+Inf",route="/readyz",service="gateway"} 999.0
http_request_duration_seconds_count{route="/v1/{path:path}",service="gateway"} 100.0
http_request_duration_seconds_sum{route="/v1/{path:path}",service="gateway"} 12.0
"""
RETRIEVAL = """\
# TYPE vector_search_duration_seconds histogram
vector_search_duration_seconds_bucket{le="0.005"} 10.0
vector_search_duration_seconds_bucket{le="0.01"} 30.0
vector_search_duration_seconds_bucket{le="+Inf"} 40.0
vector_search_duration_seconds_count 40.0
vector_search_duration_seconds_sum 0.5
"""


def test_a_scrape_sums_the_gateways_api_traffic_and_vector_searches() -> None:
    scrape = read_scrape([GATEWAY, RETRIEVAL], at=7.0)
    assert scrape.at == 7.0
    # The gateway's API requests only: not its own /metrics, not what services count.
    assert (scrape.requests, scrape.errors) == (100.0, 10.0)
    assert scrape.latency == {0.1: 60.0, 0.5: 90.0, math.inf: 100.0}  # /readyz left out
    assert scrape.vector_search == {0.005: 10.0, 0.01: 30.0, math.inf: 40.0}


def test_p95_interpolates_within_the_bucket_of_the_new_observations() -> None:
    before = {0.1: 60.0, 0.5: 90.0, math.inf: 100.0}
    # 100 new: 20 under 0.1 s, 40 between 0.1 and 0.5, 40 above.
    after = {0.1: 80.0, 0.5: 150.0, math.inf: 200.0}
    # rank 95 falls in the +Inf bucket: its lower bound is the estimate, as in Prometheus.
    assert quantile(0.95, before, after) == 0.5
    # rank 50: the 30th of the 40 in (0.1, 0.5] -> three quarters of the way.
    assert quantile(0.5, before, after) == pytest.approx(0.1 + 0.4 * 30 / 40)
    assert quantile(0.1, before, after) == pytest.approx(0.1 * 10 / 20)


def test_no_new_observations_no_quantile() -> None:
    same = {0.1: 5.0, math.inf: 5.0}
    assert quantile(0.95, same, same) is None
    assert quantile(0.95, {}, {}) is None
