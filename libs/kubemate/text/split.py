"""Splitting extracted text into chunks sized in tokens.

Recursive character splitting (paragraphs, then lines, then sentences, then words) from
langchain-text-splitters, measured with a real tokenizer so ``chunk_size`` means tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter

from kubemate.settings import SplitterConfig
from kubemate.text.parse import Section
from kubemate.text.tokens import get_encoding

# Chinese sentence punctuation after the Western separators: a Chinese paragraph has no spaces,
# so without these the splitter would fall back to cutting mid-sentence.
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", " ", ""]


@dataclass(frozen=True, slots=True)
class Chunk:
    position: int
    text: str
    page: int


class TokenSplitter:
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

    def split(self, sections: Iterable[Section]) -> Iterator[Chunk]:
        """Chunks in document order; a chunk never spans two pages, so its page is exact."""
        position = 0
        for section in sections:
            for text in self._splitter.split_text(section.text):
                if text.strip():
                    yield Chunk(position=position, text=text, page=section.page)
                    position += 1
