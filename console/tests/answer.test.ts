import { describe, expect, it } from "vitest";
import { outcomeOf, segments } from "../src/chat/answer";
import { chatAnswer } from "./standin";

const answer = chatAnswer;

const citation = { index: 1, document_id: "d", chunk_id: "c", source: "a.txt", title: "", page: 0, score: 0.5, snippet: "s", cited: true };

describe("answers", () => {
  it("turns the [n] labels of known citations into links", () => {
    expect(segments("Margin was 3.2% [1], branches [2] and [7].", [1, 2])).toEqual([
      { text: "Margin was 3.2% " },
      { cite: 1 },
      { text: ", branches " },
      { cite: 2 },
      { text: " and [7]." },
    ]);
    expect(segments("no labels", [1])).toEqual([{ text: "no labels" }]);
  });

  it("tells an answer from 'cannot answer'", () => {
    expect(outcomeOf(answer({ citations: [citation] }))).toBe("answer");
    expect(outcomeOf(answer({ citations: [] }))).toBe("cannot-answer");
    expect(outcomeOf(answer({ no_documents: true }))).toBe("no-documents");
    expect(outcomeOf(answer({ citations: [citation], cannot_answer: true }))).toBe("cannot-answer");
    // The API's own flag wins over the citations: a quoted refusal may still list its sources.
    expect(outcomeOf(answer({ citations: [], cannot_answer: false }))).toBe("answer");
  });

  it("flags the parts of unsupported sentences, labels included", () => {
    const text = "Margin was 3.2% [1]. Globex opened a lab [2]. Done.";
    expect(segments(text, [1, 2], ["Globex opened a lab [2].", "a sentence the answer lacks"])).toEqual([
      { text: "Margin was 3.2% " },
      { cite: 1 },
      { text: ". " },
      { text: "Globex opened a lab ", unsupported: true },
      { cite: 2, unsupported: true },
      { text: ".", unsupported: true },
      { text: " Done." },
    ]);
    expect(segments(text, [1, 2], [])).toEqual(segments(text, [1, 2]));
  });
});
