"""The order of equal scores (kubemate.vectorstore.base.ranking_key) and the cut of an engine's
ranking (kubemate.vectorstore.milvus.ranked): two stacks that ingested the same files in
another order must rank them alike. The engine here is a stand-in that, as Milvus does, keeps
tied chunks in insertion order and cuts its answer at the limit it was asked for."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kubemate.vectorstore import SearchHit, ranking_key
from kubemate.vectorstore.milvus import TIE_MARGIN, ranked, scored_by_text


def hit(
    source: str, score: float, position: int = 0, chunk_id: str = "", text: str = ""
) -> SearchHit:
    return SearchHit(
        chunk_id=chunk_id or f"{source}#{position}",
        document_id=f"doc-{source}",
        chunk_text=text or f"words of {source}#{position}",
        source=source,
        title="",
        position=position,
        page=0,
        score=score,
    )


def engine(inserted: Sequence[SearchHit], asked: list[int]) -> Callable[[int], list[SearchHit]]:
    """The ``n`` best of ``inserted``, ties in insertion order; records each ``n`` asked."""

    def search(n: int) -> list[SearchHit]:
        asked.append(n)
        return sorted(inserted, key=lambda h: -h.score)[:n]

    return search


def names(hits: Sequence[SearchHit]) -> list[tuple[str, int]]:
    return [(h.source, h.position) for h in hits]


def test_equal_scores_go_by_file_name_then_place_then_chunk_id() -> None:
    hits = [
        hit("b.txt", 0.5),
        hit("a.txt", 0.5, position=2),
        hit("c.txt", 0.9),
        hit("a.txt", 0.5, position=1, chunk_id="z"),
        hit("a.txt", 0.5, position=1, chunk_id="y"),
    ]
    ordered = sorted(hits, key=ranking_key)
    assert [(h.source, h.position, h.chunk_id) for h in ordered] == [
        ("c.txt", 0, "c.txt#0"),  # the best score first, whatever its name
        ("a.txt", 1, "y"),  # the same file uploaded twice: only the chunk id tells them apart
        ("a.txt", 1, "z"),
        ("a.txt", 2, "a.txt#2"),
        ("b.txt", 0, "b.txt#0"),
    ]


def test_a_ranking_does_not_depend_on_the_order_chunks_were_inserted_in() -> None:
    rows = [
        hit("best.txt", 0.9),
        hit("copy-b.txt", 0.7, text="x"),
        hit("copy-a.txt", 0.7, text="x"),
    ]
    rows += [hit("worse.txt", 0.1)]
    first = ranked(engine(rows, []), 2)
    second = ranked(engine(list(reversed(rows)), []), 2)
    # The engine alone would cut between the two copies by insertion order.
    assert names(first) == names(second) == [("best.txt", 0), ("copy-a.txt", 0)]


def test_ties_at_the_cut_are_all_fetched_before_cutting() -> None:
    tied = [hit(f"{name}.txt", 0.5) for name in "edcba"]
    asked: list[int] = []
    hits = ranked(engine([hit("top.txt", 0.8), *tied, hit("low.txt", 0.2)], asked), 3)
    assert names(hits) == [("top.txt", 0), ("a.txt", 0), ("b.txt", 0)]
    # One more than the limit, then twice as many while the last one still tied.
    assert asked == [4, 8]


def test_one_more_than_the_limit_is_asked_when_nothing_ties() -> None:
    asked: list[int] = []
    rows = [hit("a.txt", 0.9), hit("b.txt", 0.8), hit("c.txt", 0.7)]
    assert names(ranked(engine(rows, asked), 2)) == [("a.txt", 0), ("b.txt", 0)]
    assert asked == [3]
    assert names(ranked(engine(rows[:1], []), 5)) == [("a.txt", 0)]
    assert ranked(engine([], []), 5) == []


def test_copies_of_one_text_score_alike_at_their_best() -> None:
    # One text embedded beside other texts on each stack: its copies' cosines a rounding apart.
    rows = [hit("b.txt", 0.42814648, text="same"), hit("a.txt", 0.42814642, text="same")]
    rows += [hit("c.txt", 0.3)]
    assert [h.score for h in scored_by_text(rows)] == [0.42814648, 0.42814648, 0.3]
    assert names(ranked(engine(rows, []), 1)) == [("a.txt", 0)]


def test_a_copy_left_out_by_the_engine_is_fetched_before_cutting() -> None:
    # The engine's last hit copies a kept text: its other copies may be further down.
    rows = [hit("z.txt", 0.9, text="same"), hit("y.txt", 0.8999, text="same")]
    rows += [hit("a.txt", 0.8998, text="same"), hit("low.txt", 0.1)]
    asked: list[int] = []
    assert names(ranked(engine(rows, asked), 1)) == [("a.txt", 0)]
    assert asked == [2, 4]


def test_ties_are_fetched_only_up_to_a_margin_beyond_the_limit() -> None:
    rows = [hit(f"{i:04}.txt", 0.5) for i in range(1000)]
    asked: list[int] = []
    hits = ranked(engine(rows[::-1], asked), 2)
    assert len(hits) == 2 and max(asked) == 2 + TIE_MARGIN
