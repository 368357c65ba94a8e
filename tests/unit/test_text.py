"""Format detection, extraction, token counting, splitting and the prompt."""

import io

import pytest

from kubemate.errors import DocumentProcessingError, EmptyDocument, UnsupportedMediaType
from kubemate.settings import SplitterConfig
from kubemate.text.ids import chunk_id
from kubemate.text.parse import (
    HTML,
    MARKDOWN,
    PDF,
    TEXT,
    Section,
    detect_content_type,
    extract_sections,
)
from kubemate.text.prompt import DEFAULT_TEMPLATES, PromptConfig, build_prompt
from kubemate.text.split import TokenSplitter
from kubemate.text.tokens import count_tokens, get_encoding


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one text line per page, written by hand (no PDF writer needed)."""
    objects: list[bytes] = []
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font_id = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


@pytest.mark.parametrize(
    "head, filename, expected",
    [
        (b"%PDF-1.7\n...", "report.txt", PDF),
        (b"plain words\n", "notes.pdf", TEXT),
        (b"# Title\n\nbody", "x", MARKDOWN),
        (b"words", "readme.md", MARKDOWN),
        (b"<!DOCTYPE html><html><body>x</body></html>", "page", HTML),
        ("中文文本".encode(), "zh.txt", TEXT),
    ],
)
def test_detect_by_bytes_not_name(head: bytes, filename: str, expected: str) -> None:
    assert detect_content_type(head, filename) == expected


@pytest.mark.parametrize(
    "head", [b"\x89PNG\r\n\x1a\n....", b"\x00\x01\x02binary", b"\xff\xfe\xfa\xfb" * 10]
)
def test_unsupported_bytes_are_refused(head: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        detect_content_type(head, "fake.txt")


def test_empty_file_is_refused() -> None:
    with pytest.raises(EmptyDocument):
        detect_content_type(b"", "empty.txt")


def test_sniffed_prefix_may_end_inside_a_multibyte_character() -> None:
    head = ("é" * 10).encode()[:-1]
    assert detect_content_type(head, "x") == TEXT


def test_pdf_keeps_page_numbers() -> None:
    sections = list(extract_sections(io.BytesIO(make_pdf(["alpha page", "beta page"])), PDF))
    assert [(s.page, s.text.strip()) for s in sections] == [(1, "alpha page"), (2, "beta page")]


def test_corrupt_pdf_is_a_processing_error() -> None:
    with pytest.raises(DocumentProcessingError):
        list(extract_sections(io.BytesIO(b"%PDF-1.4\nthis is not a pdf"), PDF))


def test_html_text_drops_scripts_and_keeps_blocks() -> None:
    html = b"<html><script>alert(1)</script><p>First</p><p>Second &amp; more</p></html>"
    (section,) = extract_sections(io.BytesIO(html), HTML)
    assert "alert" not in section.text
    assert section.text.split() == ["First", "Second", "&", "more"]


def test_offline_tokenizer_counts_cl100k_tokens() -> None:
    assert get_encoding().name == "cl100k_base"
    assert count_tokens("hello world") == 2


def test_splitter_respects_token_budget_and_overlap() -> None:
    splitter = TokenSplitter(SplitterConfig(chunk_size=40, chunk_overlap=8))
    sentences = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(60))
    chunks = list(splitter.split([Section(sentences)]))
    assert len(chunks) > 5
    assert all(count_tokens(c.text) <= 40 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    # Overlap: the start of each chunk repeats words from the end of the previous one.
    assert any(chunks[i].text.split()[0] in chunks[i - 1].text for i in range(1, len(chunks)))


def test_splitter_cuts_chinese_at_sentence_marks() -> None:
    splitter = TokenSplitter(SplitterConfig(chunk_size=30, chunk_overlap=0))
    text = "这是第一句话，内容很长很长。" * 20
    chunks = list(splitter.split([Section(text, page=3)]))
    assert len(chunks) > 1
    assert all(c.text.endswith("。") for c in chunks)
    assert {c.page for c in chunks} == {3}


def test_chunk_ids_are_deterministic_and_distinct() -> None:
    assert chunk_id("t", "d", 0) == chunk_id("t", "d", 0)
    assert len({chunk_id("t", "d", 0), chunk_id("t", "d", 1), chunk_id("u", "d", 0)}) == 3


def test_prompt_numbers_contexts_and_uses_the_product_template() -> None:
    prompt = build_prompt(PromptConfig(), "What is X?", ["X is a letter.", "Y follows X."])
    assert prompt.startswith("Based on the following known information")
    assert "I cannot answer this question" in prompt
    assert "[1] X is a letter.\n---\n[2] Y follows X." in prompt
    assert prompt.rstrip().endswith("Question: What is X?\nAnswer:")


def test_chinese_prompt_variant_and_override() -> None:
    assert "根据已知信息无法回答该问题" in build_prompt(PromptConfig(), "问题", ["上下文"], "zh")
    custom = PromptConfig(templates={**DEFAULT_TEMPLATES, "en": "C={context} Q={question}"})
    assert build_prompt(custom, "q", ["a"]) == "C=[1] a Q=q"
