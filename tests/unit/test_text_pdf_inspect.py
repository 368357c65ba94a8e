"""The upload-time PDF check (kubemate_ingest.pdf_inspect) on hand-built files: each place a PDF
can hide JavaScript or a Launch action is found, page counts come from the page tree (not the
file's own /Count), and the read budget bounds what a damaged file can make it read."""

from __future__ import annotations

import io
import re

import pytest
from pypdf import PdfWriter

from kubemate.errors import PdfActiveContent, PdfEncrypted, PdfTooManyPages, PdfUninspectable
from kubemate_ingest.pdf_inspect import PdfPolicy, inspect_pdf

PAGE = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]%s >>"
JS = b"<< /S /JavaScript /JS (app.alert(1)) >>"


def build(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (object 1 is the catalog) with a correct cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def simple(
    *, catalog: bytes = b"", page: bytes = b"", extra: list[bytes] | None = None, pages: int = 1
) -> bytes:
    """Catalog (1), page tree (2), ``pages`` pages (3...), then ``extra`` objects."""
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R" + catalog + b" >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        *[PAGE % page for _ in range(pages)],
        *(extra or []),
    ]
    return build(objects)


def check(data: bytes, policy: PdfPolicy | None = None) -> int | None:
    stream = io.BytesIO(data)
    facts = inspect_pdf(stream, policy or PdfPolicy())
    assert stream.tell() == 0  # ready to be stored
    return facts.pages


def test_a_plain_pdf_passes_with_its_page_count() -> None:
    assert check(simple(pages=3)) == 3


def test_a_pdf_written_by_pypdf_passes() -> None:
    writer = PdfWriter()
    for _ in range(4):
        writer.add_blank_page(612, 792)
    buffer = io.BytesIO()
    writer.write(buffer)
    assert check(buffer.getvalue()) == 4


# Object 4 is the first extra object when there is one page (1 catalog, 2 pages, 3 page).
ACTIVE: dict[str, bytes] = {
    "open action": simple(catalog=b" /OpenAction 4 0 R", extra=[JS]),
    "open action, direct": simple(catalog=b" /OpenAction << /S /JavaScript /JS (x) >>"),
    "document /AA": simple(catalog=b" /AA << /WC 4 0 R >>", extra=[JS]),
    "page /AA": simple(page=b" /AA << /O 4 0 R >>", extra=[JS]),
    "link annotation": simple(
        page=b" /Annots [4 0 R]",
        extra=[b"<< /Type /Annot /Subtype /Link /Rect [0 0 9 9] /A 5 0 R >>", JS],
    ),
    "annotation /AA": simple(
        page=b" /Annots [<< /Type /Annot /Subtype /Widget /AA << /E 4 0 R >> >>]", extra=[JS]
    ),
    "a /JS entry without /S": simple(
        catalog=b" /OpenAction << /S /Rendition /JS 4 0 R >>", extra=[b"(x)"]
    ),
    "JavaScript in a /Next chain": simple(
        catalog=b" /OpenAction << /S /URI /URI (https://x) /Next [5 0 R 4 0 R] >>",
        extra=[JS, b"<< /S /GoTo /D [3 0 R /Fit] >>"],
    ),
    "document-level JavaScript": simple(
        catalog=b" /Names << /JavaScript << /Names [(a) 4 0 R] >> >>", extra=[JS]
    ),
    "form field": simple(
        catalog=b" /AcroForm << /Fields [4 0 R] >>",
        extra=[b"<< /FT /Tx /T (f) /Kids [5 0 R] >>", b"<< /T (k) /AA << /K 6 0 R >> >>", JS],
    ),
    "bookmark": simple(
        catalog=b" /Outlines 4 0 R",
        extra=[
            b"<< /Type /Outlines /First 5 0 R >>",
            b"<< /Title (a) /Next 6 0 R >>",
            b"<< /Title (b) /A 7 0 R >>",
            JS,
        ],
    ),
    "Launch action": simple(catalog=b" /OpenAction << /S /Launch /F (calc.exe) >>"),
    "hex-escaped names": simple(catalog=b" /OpenAction << /S /Java#53cript /J#53 (x) >>"),
}


@pytest.mark.parametrize("name", list(ACTIVE))
def test_active_content_is_refused(name: str) -> None:
    with pytest.raises(PdfActiveContent) as raised:
        check(ACTIVE[name])
    assert raised.value.status == 422
    assert raised.value.type_uri.endswith("/pdf-active-content")


def test_javascript_added_by_pypdf_is_refused() -> None:
    from pypdf.actions import JavaScript

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_open_action(JavaScript("app.alert('pwned');"))
    buffer = io.BytesIO()
    writer.write(buffer)
    with pytest.raises(PdfActiveContent, match="JavaScript"):
        check(buffer.getvalue())


def test_harmless_actions_pass() -> None:
    data = simple(
        catalog=b" /OpenAction [3 0 R /Fit] /AA << /WC 4 0 R >>",
        page=b" /Annots [<< /Type /Annot /Subtype /Link /Rect [0 0 9 9] /A << /S /URI "
        b"/URI (https://kubemate.dev) >> >>]",
        extra=[b"<< /S /GoTo /D [3 0 R /Fit] >>"],
    )
    assert check(data) == 1


def test_too_many_pages_declared_are_refused_before_the_walk() -> None:
    with pytest.raises(PdfTooManyPages, match="has 11 pages; at most 10") as raised:
        check(simple(pages=11), PdfPolicy(max_pages=10))
    assert raised.value.type_uri.endswith("/pdf-too-many-pages")
    assert raised.value.extra == {"max_pages": 10}
    assert check(simple(pages=10), PdfPolicy(max_pages=10)) == 10


def test_a_lying_page_count_does_not_hide_pages() -> None:
    data = simple(pages=11).replace(b"/Count 11", b"/Count 1 ")  # same length: offsets hold
    with pytest.raises(PdfTooManyPages, match="more pages than that"):
        check(data, PdfPolicy(max_pages=10))


def test_a_page_tree_with_a_cycle_ends() -> None:
    # The page's parent lists itself and the tree root as kids: visited once each.
    data = build(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 1 >>",
            PAGE % b"",
        ]
    )
    assert check(data) == 1


def test_encrypted_pdfs_are_refused() -> None:
    for password in ("secret", ""):
        writer = PdfWriter()
        writer.add_blank_page(612, 792)
        writer.encrypt(user_password=password, owner_password="owner", algorithm="AES-256")
        buffer = io.BytesIO()
        writer.write(buffer)
        with pytest.raises(PdfEncrypted):
            check(buffer.getvalue())


def test_an_unparseable_pdf_is_left_to_the_worker() -> None:
    """The worker fails it with pypdf's reason; refusing here would hide that reason."""
    assert check(b"%PDF-1.4\nnot really a pdf at all") is None
    assert check(simple(pages=3)[:300]) is None


def test_reading_stops_at_the_budget() -> None:
    """Without a usable cross-reference table pypdf reads the whole file to rebuild one: beyond
    the budget, the file is refused instead."""
    data = simple(pages=2)
    data = data[:9] + b"%" + b"x" * 200_000 + b"\n" + data[9:]
    data = data[: data.index(b"xref\n")] + data[data.index(b"trailer") :]
    data = re.sub(rb"startxref\n\d+", b"startxref\n0", data)
    with pytest.raises(PdfUninspectable, match="65536 bytes") as raised:
        check(data, PdfPolicy(max_read_bytes=64 * 1024))
    assert raised.value.type_uri.endswith("/pdf-uninspectable")
    assert check(data, PdfPolicy(max_read_bytes=1024 * 1024)) == 2  # the same file, readable


def test_too_many_objects_to_visit_are_refused() -> None:
    with pytest.raises(PdfUninspectable, match="more than 1000"):
        check(simple(pages=1200), PdfPolicy(max_objects=1000, max_pages=5000))


def test_the_page_count_uses_no_content_stream() -> None:
    """Page content is never read: a page whose /Contents is a broken stream still counts."""
    data = simple(page=b" /Contents 4 0 R", extra=[b"<< /Length 99999999 >>\nstream\nx"])
    assert check(data) == 1


def test_policy_comes_from_ingest_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubemate_ingest.settings import IngestSettings

    assert IngestSettings().ingest.pdf == PdfPolicy()
    monkeypatch.setenv("KUBEMATE_INGEST__PDF__MAX_PAGES", "7")
    assert IngestSettings().ingest.pdf.max_pages == 7
