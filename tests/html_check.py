"""A strict reading of the HTML pages dpo writes: well nested, self-contained, nothing fetched."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

# Elements that have no end tag in HTML.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
URL_ATTRIBUTES = {"src", "href", "action", "poster", "srcset", "data", "formaction", "xlink:href"}


@dataclass
class Page:
    tags: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # src of every <img>
    links: list[str] = field(default_factory=list)  # href of every <a>
    text: str = ""
    styles: str = ""


class _StrictParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.stack: list[tuple[str, tuple[int, int]]] = []
        self.errors: list[str] = []
        self._text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.page.tags.append(tag)
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.errors.append(f"<{tag}> has an event handler attribute {name}")
            if name in URL_ATTRIBUTES and value and re.match(r"\s*(https?:|//|javascript:)", value, re.IGNORECASE):
                self.errors.append(f"<{tag} {name}={value[:60]!r}> points outside the page")
        if tag == "img":
            self.page.images.append(values.get("src") or "")
        if tag == "a":
            self.page.links.append(values.get("href") or "")
        if tag == "style":
            self._in_style = True
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.errors.append(f"</{tag}> closes a void element at line {self.getpos()[0]}")
            return
        if not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1] if self.stack else None
            self.errors.append(f"</{tag}> at line {self.getpos()[0]} does not close the open {open_tag}")
            return
        self.stack.pop()
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.page.styles += data
        else:
            self._text.append(data)


def parse_strict(html: str) -> Page:
    """Parse `html`; raise AssertionError on mis-nested tags, external references or scripts."""
    assert html.lstrip().lower().startswith("<!doctype html>"), "no <!DOCTYPE html>"
    parser = _StrictParser()
    parser.feed(html)
    parser.close()
    errors = parser.errors + [f"<{tag}> opened at line {pos[0]} is never closed" for tag, pos in parser.stack]
    page = parser.page
    if "script" in page.tags:
        errors.append("the page has a <script>")
    if "link" in page.tags:
        errors.append("the page links an external resource (<link>)")
    if re.search(r"@import|url\(", page.styles):
        errors.append("the stylesheet fetches something (@import / url())")
    for src in page.images:
        if not src.startswith("data:image/png;base64,"):
            errors.append(f"<img src={src[:60]!r}> is not an embedded PNG")
        elif not base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n"):
            errors.append("an embedded image is not PNG data")
    assert not errors, "\n".join(errors)
    page.text = "".join(parser._text)
    return page
