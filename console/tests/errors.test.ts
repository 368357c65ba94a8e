import { mount } from "@vue/test-utils";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, errorOf } from "../src/api/client";
import ErrorNotice from "../src/components/ErrorNotice.vue";
import { describeError } from "../src/errors";
import { problem, testI18n } from "./standin";

const t = testI18n().global.t as (key: string, named?: Record<string, unknown>) => string;

afterEach(() => vi.useRealTimers());

describe("errors in words", () => {
  it("shows the problem's detail, never a bare status", async () => {
    const error = await errorOf(problem(415, "unsupported file type: application/x-msdownload"));
    expect(describeError(error, t)).toBe("unsupported file type: application/x-msdownload");
    expect(describeError(new ApiError(502, ""), t)).toBe("The server failed; the details are in its log.");
    expect(describeError(new ApiError(0, ""), t)).toMatch(/gateway could not be reached/);
    expect(describeError(new ApiError(403, "this action needs the admin role"), t)).toBe(
      "Your role may not do this. this action needs the admin role",
    );
  });

  it("says when to retry after a 429", async () => {
    const error = await errorOf(problem(429, "too many requests from this tenant: retry later", { "Retry-After": "7" }));
    expect(error.retryAfterS).toBe(7);
    expect(describeError(error, t)).toBe("Too many requests. Try again in 7 s. (too many requests from this tenant: retry later)");
  });

  it("counts down to the retry", async () => {
    vi.useFakeTimers();
    const wrapper = mount(ErrorNotice, {
      props: { error: new ApiError(429, "slow down", { retryAfterS: 3 }) },
      global: { plugins: [testI18n()] },
    });
    expect(wrapper.text()).toContain("Try again in 3 s.");
    await vi.advanceTimersByTimeAsync(2000);
    expect(wrapper.text()).toContain("Try again in 1 s.");
    await vi.advanceTimersByTimeAsync(1000);
    expect(wrapper.text()).toContain("You can try again now.");
    expect(wrapper.get("[role=alert]")).toBeTruthy();
  });

  it("speaks Chinese when the console does", () => {
    const zh = testI18n("zh").global.t as typeof t;
    expect(describeError(new ApiError(429, "", { retryAfterS: 5 }), zh)).toBe("请求过于频繁。 请在 5 秒后重试。");
  });
});
