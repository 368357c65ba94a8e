// An error as a sentence: the API's problem `detail` in words, never a bare status code.
import { ApiError } from "./api/client";

type Translate = (key: string, named?: Record<string, unknown>) => string;

export function describeError(error: unknown, t: Translate): string {
  if (error instanceof ApiError) {
    const detail = error.detail || error.title;
    if (error.status === 0) return t("errors.network");
    if (error.status === 429) {
      const seconds = error.retryAfterS;
      const when = seconds === null ? t("errors.retryLater") : t("errors.retryIn", { seconds });
      return detail ? `${t("errors.rateLimited")} ${when} (${detail})` : `${t("errors.rateLimited")} ${when}`;
    }
    if (error.status === 403) return detail ? `${t("errors.forbidden")} ${detail}` : t("errors.forbidden");
    if (error.status >= 500 && !detail) return t("errors.server");
    return detail || t("errors.unknown");
  }
  if (error instanceof Error && error.message) return error.message;
  return t("errors.unknown");
}
