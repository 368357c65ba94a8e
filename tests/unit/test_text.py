"""Format detection, extraction, token counting, splitting and the prompt."""

import io
import random
import zipfile

import pytest
from pydantic import ValidationError

from kubemate.errors import DocumentProcessingError, EmptyDocument, UnsupportedMediaType
from kubemate.inference.base import plain_text
from kubemate.settings import SplitterConfig
from kubemate.text.docx_text import DOCX, ZipLimits
from kubemate.text.parse import (
    HTML,
    MARKDOWN,
    PDF,
    SNIFF_BYTES,
    TEXT,
    Section,
    detect_content_type,
    extract_sections,
    sniff_content_type,
)
from kubemate.text.split import (
    FixedTokenSplitter,
    RecursiveTokenSplitter,
    SplitterSpec,
    TokenSplitter,
    build_splitter,
    parse_spec,
)
from kubemate.text.tokens import count_tokens, get_encoding
from kubemate_retrieval.prompt import DEFAULT_TEMPLATES, PromptConfig, build_prompt
from kubemate_worker.ids import chunk_id


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
    # A chat model (the default kind) gets the product template as one user message.
    prompt = plain_text(
        build_prompt(PromptConfig(), "What is X?", ["X is a letter.", "Y follows X."])
    )
    assert prompt.startswith("Based on the following known information")
    assert "I cannot answer this question" in prompt
    assert "[1] X is a letter.\n---\n[2] Y follows X." in prompt
    # No "Answer:" label for the model to continue or echo (issue 12): the chat template ends
    # with the question; the runtime's template opens the model's turn.
    assert prompt.rstrip().endswith("Question: What is X?")
    assert "Answer:" not in prompt


def test_chinese_prompt_variant_and_override() -> None:
    assert "根据已知信息无法回答该问题" in plain_text(
        build_prompt(PromptConfig(), "问题", ["上下文"], "zh")
    )
    custom = PromptConfig(templates={**DEFAULT_TEMPLATES, "en": "C={context} Q={question}"})
    assert plain_text(build_prompt(custom, "q", ["a"])) == "C=[1] a Q=q"


# ---- DOCX ----------------------------------------------------------------------------------------


def make_docx(*, extra_entries: dict[str, bytes] | None = None) -> bytes:
    """A real Word document written with python-docx: a title, headings, body text and a table."""
    import docx

    document = docx.Document()
    document.add_heading("Annual report", level=0)
    document.add_heading("Results", level=1)
    document.add_paragraph("The margin was 3.2 percent.")
    document.add_heading("Branches", level=2)
    document.add_paragraph("Twelve new branches opened in Lyon.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("City", "Branches"), ("Lyon", "12")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    if not extra_entries:
        return out.getvalue()
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in extra_entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def plain_zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_docx_is_recognised_by_its_zip_directory_not_its_name() -> None:
    assert sniff_content_type(io.BytesIO(make_docx()), "report.txt") == DOCX
    with pytest.raises(UnsupportedMediaType):
        sniff_content_type(io.BytesIO(plain_zip({"a.txt": b"x"})), "report.docx")
    # The first bytes alone cannot tell a DOCX from any zip.
    with pytest.raises(UnsupportedMediaType):
        detect_content_type(make_docx()[:SNIFF_BYTES], "report.docx")


def test_sniffing_leaves_the_stream_at_its_start_and_handles_text() -> None:
    stream = io.BytesIO(b"# Title\n\nbody")
    assert sniff_content_type(stream, "x") == MARKDOWN
    assert stream.tell() == 0


def test_truncated_docx_is_a_processing_error_when_sniffed() -> None:
    data = make_docx()
    with pytest.raises(DocumentProcessingError, match="zip archive cannot be read"):
        sniff_content_type(io.BytesIO(data[: len(data) // 2]), "cut.docx")


def test_docx_text_keeps_reading_order_headings_and_tables() -> None:
    (section,) = extract_sections(io.BytesIO(make_docx()), DOCX)
    assert section.page == 0
    assert section.text.split("\n\n") == [
        "# Annual report",
        "## Results",
        "The margin was 3.2 percent.",
        "### Branches",
        "Twelve new branches opened in Lyon.",
        "City | Branches",
        "Lyon | 12",
    ]


def test_zip_bomb_docx_is_refused_before_decompressing() -> None:
    bomb = make_docx(extra_entries={"word/media/zeros.bin": b"\0" * (4 * 1024 * 1024)})
    assert sniff_content_type(io.BytesIO(bomb), "bomb.docx") == DOCX  # the upload is accepted
    with pytest.raises(DocumentProcessingError, match="zip bomb"):
        list(extract_sections(io.BytesIO(bomb), DOCX))


def test_docx_larger_than_the_total_limit_is_refused() -> None:
    data = make_docx(extra_entries={"word/media/noise.bin": random.Random(1).randbytes(64 * 1024)})
    with pytest.raises(DocumentProcessingError, match="would expand"):
        list(extract_sections(io.BytesIO(data), DOCX, zip_limits=ZipLimits(max_total_bytes=65536)))
    with pytest.raises(DocumentProcessingError, match="entries"):
        list(extract_sections(io.BytesIO(data), DOCX, zip_limits=ZipLimits(max_entries=3)))


def test_docx_with_corrupt_xml_is_a_processing_error() -> None:
    broken = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(make_docx())) as source,
        zipfile.ZipFile(broken, "w") as target,
    ):
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml":
                data = data[: len(data) // 2]  # cut mid-element
            target.writestr(info, data)
    with pytest.raises(DocumentProcessingError, match="Word document cannot be read"):
        list(extract_sections(io.BytesIO(broken.getvalue()), DOCX))


def test_pdf_damaged_past_its_header_is_a_processing_error() -> None:
    data = make_pdf(["alpha page"]).replace(b"/Pages 2 0 R", b"/Pages 9 0 R")
    with pytest.raises(DocumentProcessingError):
        list(extract_sections(io.BytesIO(data), PDF))


# ---- splitting strategies ------------------------------------------------------------------------

MARKDOWN_DOC = """Preamble before any heading.

# Guide

Intro to the guide.

## Install

```sh
# not a heading: inside a code block
pip install kubemate
```

### Linux

Use the package manager.

## Use

Run it.
"""


def test_markdown_strategy_splits_by_headings_and_keeps_the_path_as_title() -> None:
    splitter = build_splitter(SplitterSpec(strategy="markdown", chunk_size=64, chunk_overlap=0))
    chunks = list(splitter.split([Section(MARKDOWN_DOC)]))
    assert [(c.title, c.text.splitlines()[0]) for c in chunks] == [
        ("", "Preamble before any heading."),
        ("Guide", "# Guide"),
        ("Guide > Install", "## Install"),
        ("Guide > Install > Linux", "### Linux"),
        ("Guide > Use", "## Use"),
    ]
    assert "pip install kubemate" in chunks[2].text
    assert [c.position for c in chunks] == list(range(len(chunks)))


def test_markdown_strategy_splits_long_sections_by_tokens() -> None:
    body = " ".join(f"Sentence {i} about the install steps." for i in range(80))
    splitter = build_splitter(SplitterSpec(strategy="markdown", chunk_size=32, chunk_overlap=4))
    chunks = list(splitter.split([Section(f"# Setup\n\n{body}\n", page=2)]))
    assert len(chunks) > 3
    assert all(count_tokens(c.text) <= 32 for c in chunks)
    assert {(c.title, c.page) for c in chunks} == {("Setup", 2)}


def test_fixed_strategy_makes_exact_token_windows_with_overlap() -> None:
    text = " ".join(f"word{i}" for i in range(400)) + " 中文文本，没有空格的句子。" * 20
    splitter = build_splitter(SplitterSpec(strategy="fixed", chunk_size=40, chunk_overlap=10))
    chunks = list(splitter.split([Section(text)]))
    sizes = [count_tokens(c.text) for c in chunks]
    assert max(sizes) <= 40 and sum(s >= 38 for s in sizes[:-1]) >= len(sizes) - 3
    assert "\ufffd" not in "".join(c.text for c in chunks)  # never a torn multi-byte character
    # Each window starts 30 tokens after the previous one, so neighbours share text.
    assert chunks[1].text.split()[0] in chunks[0].text


def test_build_splitter_reads_the_stream_entry_json_and_defaults() -> None:
    spec = SplitterSpec(strategy="fixed", chunk_size=100, chunk_overlap=0)
    assert isinstance(build_splitter(spec.to_json()), FixedTokenSplitter)
    assert isinstance(build_splitter(""), RecursiveTokenSplitter)
    assert parse_spec("", SplitterConfig(chunk_size=300, chunk_overlap=30)) == SplitterSpec(
        strategy="recursive", chunk_size=300, chunk_overlap=30
    )
    with pytest.raises(DocumentProcessingError):
        build_splitter('{"strategy": "sentences", "chunk_size": 100, "chunk_overlap": 0}')
    with pytest.raises(DocumentProcessingError):
        build_splitter("not json")


@pytest.mark.parametrize(
    "values", [{"chunk_size": 8}, {"chunk_size": 100, "chunk_overlap": 100}, {"strategy": "x"}]
)
def test_splitter_spec_keeps_the_settings_bounds(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SplitterSpec.model_validate({"chunk_size": 100, "chunk_overlap": 0} | values)


def test_markdown_strategy_carries_headings_and_code_fences_across_sections() -> None:
    # How the worker feeds a long file: windows cut anywhere, even inside a code block.
    windows = [
        Section("# Guide\n\nIntro.\n\n```python\n"),
        Section("# a comment, not a heading\nprint(1)\n```\n\nAfter the code.\n"),
        Section("## Next\n\nMore.\n"),
    ]
    splitter = build_splitter(SplitterSpec(strategy="markdown", chunk_size=64, chunk_overlap=0))
    chunks = list(splitter.split(windows))
    assert [c.title for c in chunks] == ["Guide", "Guide", "Guide > Next"]
    assert chunks[1].text.startswith("# a comment, not a heading")
