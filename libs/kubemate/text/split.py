"""Splitting extracted text into chunks sized in tokens, by one of three strategies.

* ``recursive`` (default): paragraphs, then lines, then sentences (also Chinese ones), then words,
  with langchain-text-splitters' recursive splitter, measured with a real tokenizer so
  ``chunk_size`` means tokens.
* ``markdown``: sections by Markdown headings, each section then split as ``recursive``; every
  chunk keeps its heading path ("Guide > Install > Linux") as its title.
* ``fixed``: windows of exactly ``chunk_size`` tokens, ``chunk_overlap`` of them shared with the
  previous window, cut on character boundaries.

The choice travels with each upload as a :class:`SplitterSpec` (JSON in the stream entry);
:func:`build_splitter` turns it, or the settings' defaults, into a :class:`Splitter`. A
collection's default chunk size (:func:`chunking_for`) is what its embedder reads whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self

from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from kubemate.errors import DocumentProcessingError
from kubemate.settings import CollectionConfig, SplitterConfig
from kubemate.text.parse import Section
from kubemate.text.tokens import get_encoding

# Chinese sentence punctuation after the Western separators: a Chinese paragraph has no spaces,
# so without these the splitter would fall back to cutting mid-sentence.
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", " ", ""]

Strategy = Literal["recursive", "markdown", "fixed"]
STRATEGIES: tuple[Strategy, ...] = ("recursive", "markdown", "fixed")
TITLE_SEPARATOR = " > "


@dataclass(frozen=True, slots=True)
class Chunk:
    position: int
    text: str
    page: int
    title: str = ""  # the heading path (markdown strategy); empty otherwise


class Splitter(Protocol):
    def split(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        """Chunks in document order, numbered from 0; a chunk never spans two sections, so its
        page is exact."""
        ...


class SplitterSpec(BaseModel):
    """How one upload is split. Serialised into the ingest stream entry as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "recursive"
    chunk_size: int = SplitterConfig.model_fields["chunk_size"].default  # tokens
    chunk_overlap: int = SplitterConfig.model_fields["chunk_overlap"].default  # tokens

    @model_validator(mode="after")
    def _within_bounds(self) -> Self:
        # Checked by SplitterConfig itself: one place defines the bounds, so a per-upload
        # choice can never go beyond what the settings accept.
        SplitterConfig(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    def config(self, encoding: str = "cl100k_base") -> SplitterConfig:
        return SplitterConfig(
            chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap, encoding=encoding
        )


# ---- strategies ---------------------------------------------------------------------------------


class RecursiveTokenSplitter:
    def __init__(self, config: SplitterConfig) -> None:
        encoding = get_encoding(config.encoding)
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=config.chunk_size,
            chunk_overlap=config.chunk_overlap,
            length_function=lambda text: len(encoding.encode(text, disallowed_special=())),
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )

    def split_text(self, text: str) -> list[str]:
        return [t for t in self._splitter.split_text(text) if t.strip()]

    def split(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        position = 0
        for section in sections:
            for text in self.split_text(section.text):
                yield Chunk(position=position, text=text, page=section.page)
                position += 1


TokenSplitter = RecursiveTokenSplitter  # the name the worker imports


class FixedTokenSplitter:
    def __init__(self, config: SplitterConfig) -> None:
        self._encoding = get_encoding(config.encoding)
        self._size = config.chunk_size
        self._step = config.chunk_size - config.chunk_overlap

    def split(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        position = 0
        for section in sections:
            tokens = self._encoding.encode(section.text, disallowed_special=())
            if not tokens:
                continue
            # Offsets map each token to the character it starts in, so windows are cut between
            # characters: a multi-byte character split across tokens is never torn apart.
            text, offsets = self._encoding.decode_with_offsets(tokens)
            for start in range(0, len(tokens), self._step):
                end = min(start + self._size, len(tokens))
                piece = self._piece(text, offsets, start, end)
                if piece:
                    yield Chunk(position=position, text=piece, page=section.page)
                    position += 1
                if end == len(tokens):
                    break

    def _piece(self, text: str, offsets: list[int], start: int, end: int) -> str:
        while True:
            stop = offsets[end] if end < len(offsets) else len(text)
            piece = text[offsets[start] : stop].strip()
            # Cut out of its context, the text may encode to a token more (BPE merges differ
            # at the edges); dropping the window's last token keeps chunk_size a hard limit.
            if end - start <= 1 or len(self._encoding.encode(piece, disallowed_special=())) <= (
                self._size
            ):
                return piece
            end -= 1


# ATX headings only ("## Title"); setext underlines are rare in uploads and ambiguous with
# horizontal rules. Lines inside fenced code blocks are never headings.
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class HeadingSection:
    path: tuple[str, ...]
    text: str  # the heading line (if any) and the body under it

    @property
    def title(self) -> str:
        return TITLE_SEPARATOR.join(p for p in self.path if p)


@dataclass(slots=True)
class HeadingState:
    """What carries over from one section (page, or window of a long text) to the next: the
    open headings and whether a fenced code block is still open."""

    stack: list[tuple[int, str]] = field(default_factory=list)
    fence: str | None = None


def heading_sections(text: str, state: HeadingState | None = None) -> Iterator[HeadingSection]:
    """Sections of Markdown ``text`` by ATX headings; ``state`` is updated in place."""
    state = HeadingState() if state is None else state
    lines: list[str] = []
    has_body = False

    def flush() -> Iterator[HeadingSection]:
        if has_body:
            yield HeadingSection(tuple(h for _, h in state.stack), "".join(lines))

    for line in text.splitlines(keepends=True):
        if state.fence is None and (heading := _HEADING.match(line)):
            yield from flush()
            level = len(heading.group(1))
            state.stack[:] = [(lvl, h) for lvl, h in state.stack if lvl < level]
            state.stack.append((level, (heading.group(2) or "").strip()))
            lines, has_body = [line], False
            continue
        fenced = _FENCE.match(line)
        if fenced and state.fence is None:
            state.fence = fenced.group(1)[0] * 3
        elif fenced and state.fence is not None and fenced.group(1).startswith(state.fence):
            state.fence = None
        lines.append(line)
        has_body = has_body or bool(line.strip())
    yield from flush()


class MarkdownHeadingSplitter:
    def __init__(self, config: SplitterConfig) -> None:
        self._inner = RecursiveTokenSplitter(config)

    def split(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        position = 0
        state = HeadingState()
        for section in sections:
            for part in heading_sections(section.text, state):
                for text in self._inner.split_text(part.text):
                    yield Chunk(position=position, text=text, page=section.page, title=part.title)
                    position += 1


SPLITTERS: Mapping[Strategy, Callable[[SplitterConfig], Splitter]] = {
    "recursive": RecursiveTokenSplitter,
    "markdown": MarkdownHeadingSplitter,
    "fixed": FixedTokenSplitter,
}


# ---- choosing one -------------------------------------------------------------------------------

# Tokens an embedder adds to every input: [CLS] and [SEP] (BERT, MiniLM), <s> and </s> (E5).
SPECIAL_TOKENS = 2
# Embedder tokens per splitter (cl100k) token: BERT's word-pieces cut rare and technical words
# finer than cl100k. Over SciFact's 5,183 abstracts MiniLM's word-pieces per cl100k token were
# 1.06 at the median, 1.17 at the 99th percentile and 1.30 at most; chunks sized by 1.30 for
# MiniLM (195 tokens) were at most 233 word-pieces. Chinese: not measured, the same bound.
EMBEDDER_TOKENS_PER_TOKEN = 1.30


def chunking_for(
    collection: CollectionConfig, defaults: SplitterConfig, max_input_tokens: int | None
) -> SplitterConfig:
    """A collection's default chunk size and overlap (in ``defaults.encoding``'s tokens).

    The collection's own ``chunk_size``/``chunk_overlap`` if set; else ``defaults``, shrunk to
    what an embedder reading ``max_input_tokens`` (special tokens included) embeds whole, the
    overlap keeping its share of the size. An embedder that reads at least ``defaults``'
    chunk size keeps the defaults (the seed's 512/64 for E5's 512), and so does one whose limit
    is unknown (``None``)."""
    size = defaults.chunk_size
    if max_input_tokens is not None and max_input_tokens < size:
        fits = math.floor((max_input_tokens - SPECIAL_TOKENS) / EMBEDDER_TOKENS_PER_TOKEN)
        size = max(16, min(size, fits))
    if collection.chunk_size is not None:
        size = collection.chunk_size
    overlap = (
        collection.chunk_overlap
        if collection.chunk_overlap is not None
        else defaults.chunk_overlap * size // defaults.chunk_size
    )
    return SplitterConfig(chunk_size=size, chunk_overlap=overlap, encoding=defaults.encoding)


def parse_spec(
    config: SplitterSpec | SplitterConfig | str | None, defaults: SplitterConfig | None = None
) -> SplitterSpec:
    """The spec meant by ``config``: a spec as is, JSON (from a stream entry) parsed, a
    SplitterConfig or nothing (``None``, ``""``) as the recursive strategy with those sizes.

    Raises :class:`DocumentProcessingError` for JSON that is not a valid spec: retrying the
    document cannot repair it."""
    if isinstance(config, SplitterSpec):
        return config
    if config is None or config == "":
        config = defaults or SplitterConfig()
    if isinstance(config, SplitterConfig):
        strategy = getattr(config, "strategy", "recursive")
        return SplitterSpec(
            strategy=strategy, chunk_size=config.chunk_size, chunk_overlap=config.chunk_overlap
        )
    try:
        return SplitterSpec.model_validate_json(config)
    except ValidationError as exc:
        raise DocumentProcessingError(
            f"invalid splitter settings {config[:200]!r}: {exc.error_count()} error(s)"
        ) from None


def build_splitter(
    config: SplitterSpec | SplitterConfig | str | None = None,
    *,
    defaults: SplitterConfig | None = None,
) -> Splitter:
    """The splitter for an upload: ``build_splitter(job.splitter, defaults=settings.splitter)``.

    ``defaults`` gives the encoding, and the sizes when ``config`` is empty."""
    base = defaults or SplitterConfig()
    spec = parse_spec(config, base)
    return SPLITTERS[spec.strategy](spec.config(base.encoding))
