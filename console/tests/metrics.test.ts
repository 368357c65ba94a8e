import { describe, expect, it } from "vitest";
import { buckets, parseMetrics, quantileBetween, total } from "../src/health/metrics";

const before = `# HELP http_requests_total HTTP requests by route and status
# TYPE http_requests_total counter
http_requests_total{route="/v1/{path:path}",service="gateway",status="200"} 10.0
http_requests_total{route="/metrics",service="gateway",status="200"} 3.0
http_request_duration_seconds_bucket{le="0.005",route="/v1/{path:path}",service="gateway"} 2.0
http_request_duration_seconds_bucket{le="0.01",route="/v1/{path:path}",service="gateway"} 6.0
http_request_duration_seconds_bucket{le="0.025",route="/v1/{path:path}",service="gateway"} 10.0
http_request_duration_seconds_bucket{le="+Inf",route="/v1/{path:path}",service="gateway"} 10.0
`;
const after = before
  .replace('status="200"} 10.0', 'status="200"} 110.0')
  .replace('le="0.005",route="/v1/{path:path}",service="gateway"} 2.0', 'le="0.005",route="/v1/{path:path}",service="gateway"} 2.0')
  .replace('le="0.01",route="/v1/{path:path}",service="gateway"} 6.0', 'le="0.01",route="/v1/{path:path}",service="gateway"} 56.0')
  .replace('le="0.025",route="/v1/{path:path}",service="gateway"} 10.0', 'le="0.025",route="/v1/{path:path}",service="gateway"} 110.0')
  .replace('le="+Inf",route="/v1/{path:path}",service="gateway"} 10.0', 'le="+Inf",route="/v1/{path:path}",service="gateway"} 110.0');

describe("Prometheus text", () => {
  it("reads counters with their labels", () => {
    const samples = parseMetrics(before);
    expect(total(samples, "http_requests_total")).toBe(13);
    expect(total(samples, "http_requests_total", (l) => l.route !== "/metrics")).toBe(10);
    expect(samples.find((s) => s.name === "http_requests_total")?.labels.route).toBe("/v1/{path:path}");
  });

  it("gives the p95 of what happened between two scrapes", () => {
    const a = buckets(parseMetrics(before), "http_request_duration_seconds");
    const b = buckets(parseMetrics(after), "http_request_duration_seconds");
    // 100 new requests: 50 in (0.005, 0.01], 50 in (0.01, 0.025]; the 95th is 90% into the latter.
    expect(quantileBetween(a, b, 0.95)).toBeCloseTo(0.01 + 0.015 * 0.9, 6);
    expect(quantileBetween(a, a, 0.95)).toBeNull();
  });
});
