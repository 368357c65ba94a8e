// Reading an answer: its [n] citation labels, and whether it is a real answer at all.
import type { ChatAnswer } from "../api/types";

export type Segment = { text: string } | { cite: number };

/** The answer's text with each [n] that names a citation turned into a link to it. */
export function segments(answer: string, citations: number[]): Segment[] {
  const known = new Set(citations);
  const out: Segment[] = [];
  let last = 0;
  for (const match of answer.matchAll(/\[(\d{1,3})\]/g)) {
    const index = Number(match[1]);
    if (!known.has(index)) continue;
    const at = match.index ?? 0;
    if (at > last) out.push({ text: answer.slice(last, at) });
    out.push({ cite: index });
    last = at + match[0].length;
  }
  if (last < answer.length) out.push({ text: answer.slice(last) });
  return out;
}

export type Outcome = "answer" | "cannot-answer" | "no-documents";

/** An answer grounded in nothing is shown as "cannot answer", not as an answer or an error.
 * Today the API says so by giving no citations (and no_documents when the collection is empty);
 * an explicit flag a later API adds (cannot_answer, answerable) is read when present. */
export function outcomeOf(result: ChatAnswer): Outcome {
  if (result.no_documents) return "no-documents";
  if (result.cannot_answer === true || result.answerable === false) return "cannot-answer";
  return result.citations.length === 0 ? "cannot-answer" : "answer";
}

/** The answer modes the API offers, when its answers say which mode made them. */
export const ANSWER_MODES = ["auto", "generative", "extractive"] as const;

export function offersAnswerMode(result: ChatAnswer): boolean {
  return typeof result.answer_mode === "string";
}
