"""Checks a PDF's structure at upload, before anything is stored: no active content (JavaScript,
Launch actions), not encrypted, at most ``max_pages`` pages.

Reads the file lazily with pypdf (the cross-reference table, the catalog, the page tree, the
annotations and outline items, never a page's content stream) through a reader that stops after
``max_read_bytes``, so a 100 MB upload is judged by a few kilobytes of reading and nothing ever
loads the whole file into memory. Page counts come from walking the page tree, not from its
``/Count``, which the file itself claims.

A file pypdf cannot parse at all is not refused here: the worker fails it with the parser's
reason, as for any corrupt document (the document then ends FAILED, never half-indexed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, cast

from pydantic import BaseModel, Field

from kubemate.errors import (
    PdfActiveContent,
    PdfEncrypted,
    PdfRefused,
    PdfTooManyPages,
    PdfUninspectable,
)
from kubemate.logs import get_logger

log = get_logger(__name__)

# Action types that run something in the reader's viewer: scripts, or another program.
_ACTIVE_ACTIONS = frozenset({"/JavaScript", "/Launch"})


class PdfPolicy(BaseModel):
    """What an uploaded PDF may be (``KUBEMATE_INGEST__PDF__MAX_PAGES`` and so on)."""

    # Every page costs the worker a text extraction; a filing of 10,000 pages is far more
    # likely a resource attack than a document anyone queries.
    max_pages: int = Field(2000, ge=1, le=1_000_000)
    # Bytes pypdf may read while judging one file. A well-formed PDF needs a few KiB per page
    # at most; one that needs more (a broken cross-reference table that pypdf would rebuild by
    # reading the whole file into memory) is refused as uninspectable.
    max_read_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024)
    # Dictionaries visited (pages, annotations, actions, outline items, form fields).
    max_objects: int = Field(200_000, ge=1000)


@dataclass(frozen=True, slots=True)
class PdfFacts:
    pages: int | None  # None: pypdf could not parse the file (the worker will say why)
    read_bytes: int


class _BudgetExceeded(Exception):
    pass


class _BoundedReader(io.RawIOBase):
    """A read-only view of ``stream`` that raises once more than ``budget`` bytes were read.

    pypdf catches broad exceptions in its lenient recovery paths, so the overrun is also
    remembered in ``exceeded`` and checked after pypdf returns or raises."""

    def __init__(self, stream: BinaryIO, budget: int) -> None:
        super().__init__()
        self._stream = stream
        self._budget = budget
        self.read_bytes = 0
        self.exceeded = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._budget - self.read_bytes
        # Whole-file reads (pypdf's xref rebuild) are what this guard exists to stop: never more
        # than one byte past the budget is taken from the file.
        want = remaining + 1 if size is None or size < 0 or size > remaining else size
        data = self._stream.read(want)
        self.read_bytes += len(data)
        if self.read_bytes > self._budget:
            self.exceeded = True
            raise _BudgetExceeded
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def inspect_pdf(stream: BinaryIO, policy: PdfPolicy) -> PdfFacts:
    """Refuses (a 422 problem each) an encrypted PDF, one with active content, one with more
    than ``policy.max_pages`` pages, or one that cannot be judged within the read budget.
    ``stream`` is seekable and is left at position 0."""
    from pypdf import PdfReader

    bounded = _BoundedReader(stream, policy.max_read_bytes)
    stream.seek(0)
    try:
        # A RawIOBase is a binary file to pypdf; its annotation only names IO.
        reader = PdfReader(cast(IO[bytes], bounded), strict=False)
        if reader.is_encrypted:
            raise PdfEncrypted(
                "the PDF is encrypted, so its text cannot be indexed; "
                "upload a copy saved without a password"
            )
        pages = _Walker(reader, policy).run()
    except PdfRefused:
        raise
    except _BudgetExceeded:
        raise _uninspectable(policy) from None
    except RecursionError:
        raise PdfUninspectable("the PDF's object structure is nested too deeply") from None
    except Exception as exc:  # a damaged file: pypdf raises far more than PdfReadError
        if bounded.exceeded:
            raise _uninspectable(policy) from None
        log.info("pdf.unparseable", error=type(exc).__name__, read_bytes=bounded.read_bytes)
        return PdfFacts(pages=None, read_bytes=bounded.read_bytes)
    finally:
        stream.seek(0)
    if bounded.exceeded:
        raise _uninspectable(policy)
    log.info("pdf.inspected", pages=pages, read_bytes=bounded.read_bytes)
    return PdfFacts(pages=pages, read_bytes=bounded.read_bytes)


def _uninspectable(policy: PdfPolicy) -> PdfUninspectable:
    return PdfUninspectable(
        f"the PDF's structure could not be checked within {policy.max_read_bytes} bytes of "
        "reading (a damaged cross-reference table?); save it again with a PDF tool and retry"
    )


class _Walker:
    """Visits the places a PDF can attach actions (ISO 32000-1, 12.6): the catalog's
    /OpenAction and /AA, the document-level /Names /JavaScript tree, every page's /AA and its
    annotations' /A and /AA, form fields, and outline items; actions chain through /Next."""

    def __init__(self, reader: Any, policy: PdfPolicy) -> None:
        self.reader = reader
        self.policy = policy
        self.seen: set[tuple[str, int, int]] = set()
        self.visited = 0

    def run(self) -> int:
        catalog = self._dict(self.reader.trailer.raw_get("/Root"), "catalog")
        if catalog is None:
            raise ValueError("the PDF has no catalog")
        if "/OpenAction" in catalog:
            self._action(catalog.raw_get("/OpenAction"), "the document's open action")
        self._additional_actions(catalog, "the document")
        names = self._dict(catalog.raw_get("/Names"), "names") if "/Names" in catalog else None
        if names is not None and "/JavaScript" in names:
            raise _active("document-level JavaScript (/Names /JavaScript)")
        pages = self._pages(catalog)
        form = self._dict(catalog.raw_get("/AcroForm"), "form") if "/AcroForm" in catalog else None
        if form is not None and "/Fields" in form:
            self._fields(form.raw_get("/Fields"))
        if "/Outlines" in catalog:
            self._outlines(catalog.raw_get("/Outlines"))
        return pages

    # ---- resolution, bounded -------------------------------------------------------------------

    def _resolve(self, value: Any, role: str) -> Any:
        """The object behind ``value``; None for one already visited in this ``role`` (a cycle,
        or an object shared within one structure, judged once). A page is also a destination's
        target, so roles keep the structures apart."""
        from pypdf.generic import IndirectObject

        if isinstance(value, IndirectObject):
            key = (role, value.idnum, value.generation)
            if key in self.seen:
                return None
            self.seen.add(key)
            value = value.get_object()
        self.visited += 1
        if self.visited > self.policy.max_objects:
            raise PdfUninspectable(
                f"the PDF has more than {self.policy.max_objects} pages, annotations and actions "
                "to check"
            )
        return value

    def _dict(self, value: Any, role: str) -> Any:
        from pypdf.generic import DictionaryObject

        resolved = self._resolve(value, role)
        return resolved if isinstance(resolved, DictionaryObject) else None

    def _items(self, value: Any, role: str) -> list[Any]:
        from pypdf.generic import ArrayObject

        resolved = self._resolve(value, role)
        return list(resolved) if isinstance(resolved, ArrayObject) else []

    # ---- actions -------------------------------------------------------------------------------

    def _action(self, value: Any, where: str) -> None:
        """``value`` is an action dictionary, or (for /OpenAction) a destination array, which
        only points at a page and is not followed."""
        from pypdf.generic import ArrayObject, DictionaryObject

        pending = [value]
        while pending:
            action = self._dict(pending.pop(), "action")
            if action is None:
                continue
            kind = action.get("/S")
            if kind in _ACTIVE_ACTIONS or "/JS" in action:
                what = "a Launch action" if kind == "/Launch" else "JavaScript"
                raise _active(f"{what} in {where}")
            if "/Next" in action:
                following = self._resolve(action.raw_get("/Next"), "next")
                if isinstance(following, ArrayObject):
                    pending.extend(following)
                elif isinstance(following, DictionaryObject):
                    pending.append(following)

    def _additional_actions(self, holder: Any, where: str) -> None:
        if "/AA" not in holder:
            return
        triggers = self._dict(holder.raw_get("/AA"), "triggers")
        if triggers is None:
            return
        for trigger in list(triggers.keys()):
            self._action(triggers.raw_get(trigger), f"{where}'s {trigger} trigger (/AA)")

    # ---- pages, annotations, fields, outlines --------------------------------------------------

    def _pages(self, catalog: Any) -> int:
        root = catalog.raw_get("/Pages") if "/Pages" in catalog else None
        declared = self._peek_count(root)
        if declared is not None and declared > self.policy.max_pages:
            raise self._too_many(declared)
        count = 0
        pending = [root]
        while pending:
            node = self._dict(pending.pop(), "page")
            if node is None:
                continue
            if "/Kids" in node:
                kids = self._items(node.raw_get("/Kids"), "kids")
                pending.extend(reversed(kids))
                continue
            count += 1
            if count > self.policy.max_pages:
                raise self._too_many(None)
            number = count
            self._additional_actions(node, f"page {number}")
            if "/Annots" in node:
                for annotation in self._items(node.raw_get("/Annots"), "annotations"):
                    self._annotation(annotation, f"an annotation on page {number}")
        return count

    def _peek_count(self, root: Any) -> int | None:
        """The page tree's own claim, a cheap first refusal for a huge file; not trusted for
        acceptance (the walk counts the pages)."""
        node = root.get_object() if hasattr(root, "get_object") else root
        try:
            value = node.get("/Count")
        except AttributeError:
            return None
        return int(value) if isinstance(value, int) else None

    def _too_many(self, declared: int | None) -> PdfTooManyPages:
        pages = f"{declared} pages" if declared is not None else "more pages than that"
        return PdfTooManyPages(
            f"the PDF has {pages}; at most {self.policy.max_pages} are accepted: "
            "split it into several documents",
            max_pages=self.policy.max_pages,
        )

    def _annotation(self, value: Any, where: str) -> None:
        annotation = self._dict(value, "annotation")
        if annotation is None:
            return
        if "/A" in annotation:
            self._action(annotation.raw_get("/A"), where)
        self._additional_actions(annotation, where)

    def _fields(self, value: Any) -> None:
        pending = self._items(value, "fields")
        while pending:
            field = self._dict(pending.pop(), "field")
            if field is None:
                continue
            where = "a form field"
            if "/A" in field:
                self._action(field.raw_get("/A"), where)
            self._additional_actions(field, where)
            if "/Kids" in field:
                pending.extend(self._items(field.raw_get("/Kids"), "fields"))

    def _outlines(self, value: Any) -> None:
        root = self._dict(value, "outline")
        if root is None or "/First" not in root:
            return
        pending = [root.raw_get("/First")]
        while pending:
            item = self._dict(pending.pop(), "outline")
            if item is None:
                continue
            if "/A" in item:
                self._action(item.raw_get("/A"), "a bookmark")
            for link in ("/Next", "/First"):
                if link in item:
                    pending.append(item.raw_get(link))


def _active(what: str) -> PdfActiveContent:
    return PdfActiveContent(
        f"the PDF carries {what}; PDFs with active content are not accepted: "
        "print or export it to a new PDF without scripts and upload that"
    )
