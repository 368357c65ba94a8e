import { describe, expect, it } from "vitest";
import { offersAnswerMode, outcomeOf, segments } from "../src/chat/answer";
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
    expect(outcomeOf(answer({ citations: [citation], answerable: false }))).toBe("cannot-answer");
  });

  it("offers the answer-mode switch only when the API names a mode", () => {
    expect(offersAnswerMode(answer({}))).toBe(false);
    expect(offersAnswerMode(answer({ answer_mode: "extractive" }))).toBe(true);
  });
});
