// The chat in progress outlives a visit to another page (an answer keeps streaming meanwhile),
// and ends with the session.
import { reactive } from "vue";
import type { AnswerMode, Citation } from "../api/types";
import { onSessionEnd } from "../session";
import type { Outcome } from "./answer";

export type Switch = "default" | "on" | "off";

export interface Turn {
  question: string;
  answer: string;
  citations: Citation[];
  phase: "streaming" | "done" | "failed" | "restored";
  outcome: Outcome;
  error: unknown;
  mode?: AnswerMode; // how the API made the answer (quoted or written), where it says so
  unsupported: string[]; // generated sentences the sources they cite do not support
}

export const chat = reactive({
  turns: [] as Turn[],
  conversationId: null as string | null,
  options: { collection: "default", hybrid: "default" as Switch, rerank: "default" as Switch, answerMode: "default" },
  controller: null as AbortController | null,
});

export function stopAnswer(): void {
  chat.controller?.abort();
}

export function resetChat(): void {
  stopAnswer();
  chat.turns.splice(0);
  chat.conversationId = null;
}

onSessionEnd(resetChat);
