// Reading an answer: its [n] citation labels, and whether it is a real answer at all.
import type { ChatAnswer } from "../api/types";

export type Segment = { text: string; unsupported?: true } | { cite: number; unsupported?: true };

/** Where each of these sentences stands in the answer, as [start, end) ranges (a sentence the
 * answer does not hold verbatim has none). */
function rangesOf(answer: string, sentences: readonly string[]): [number, number][] {
  const ranges: [number, number][] = [];
  for (const sentence of sentences) {
    const text = sentence.trim();
    const at = text ? answer.indexOf(text) : -1;
    if (at >= 0) ranges.push([at, at + text.length]);
  }
  return ranges;
}

/** The answer's text with each [n] that names a citation turned into a link to it, and the
 * parts of the `unsupported` sentences (the server's grounding check) flagged. */
export function segments(answer: string, citations: number[], unsupported: readonly string[] = []): Segment[] {
  const known = new Set(citations);
  const ranges = rangesOf(answer, unsupported);
  const flagged = (at: number) => ranges.some(([from, to]) => at >= from && at < to);
  // Cut points: each known label, and each edge of an unsupported sentence.
  const cuts = new Set<number>([0, answer.length]);
  const labels = new Map<number, { index: number; end: number }>();
  for (const match of answer.matchAll(/\[(\d{1,3})\]/g)) {
    const index = Number(match[1]);
    if (!known.has(index)) continue;
    const at = match.index ?? 0;
    labels.set(at, { index, end: at + match[0].length });
    cuts.add(at).add(at + match[0].length);
  }
  for (const [from, to] of ranges) cuts.add(from).add(to);
  const points = [...cuts].sort((a, b) => a - b);
  const out: Segment[] = [];
  for (let i = 0; i < points.length - 1; i++) {
    const at = points[i];
    const label = labels.get(at);
    const mark = flagged(at) ? { unsupported: true as const } : {};
    if (label) {
      out.push({ cite: label.index, ...mark });
      continue;
    }
    // A cut inside a label cannot happen: a label's own cuts enclose it whole.
    const text = answer.slice(at, points[i + 1]);
    if (!text) continue;
    const last = out[out.length - 1];
    if (last && "text" in last && !!last.unsupported === !!mark.unsupported) last.text += text;
    else out.push({ text, ...mark });
  }
  return out;
}

export type Outcome = "answer" | "cannot-answer" | "no-documents";

/** An answer grounded in nothing is shown as "cannot answer", not as an answer or an error.
 * The API says so with `cannot_answer` (and `no_documents` when the collection is empty); an
 * older API without the flag said so by giving no citations. */
export function outcomeOf(result: ChatAnswer): Outcome {
  if (result.no_documents) return "no-documents";
  if (typeof result.cannot_answer === "boolean") return result.cannot_answer ? "cannot-answer" : "answer";
  return result.citations.length === 0 ? "cannot-answer" : "answer";
}

/** The answer modes /v1/chat takes as `answer_mode`: auto (quoted for a base model, written
 * for a chat model), extractive (the sources' own sentences, quoted) and generative. */
export const ANSWER_MODES = ["auto", "extractive", "generative"] as const;
