"""Read a stage's HTML page as a browser's parser would: its elements, headings, plots and every
address it names, so that tests check plots by element and that the page needs nothing outside itself."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

URL_ATTRIBUTES = {"href", "src", "xlink:href", "srcset", "action", "data", "poster"}


@dataclass
class Page:
    tags: Counter = field(default_factory=Counter)
    headings: list[str] = field(default_factory=list)  # h1 and h2 texts, in order
    captions: list[str] = field(default_factory=list)  # figcaption texts
    plots: list[str] = field(default_factory=list)  # the aria-label of each <svg role="img">
    addresses: list[str] = field(default_factory=list)  # every URL-valued attribute
    styles: list[str] = field(default_factory=list)  # <style> texts and style attributes
    figures_with_plot: int = 0  # <figure> elements holding an <svg> and a <figcaption>
    ids: Counter = field(default_factory=Counter)  # element ids, without the per-plot prefix (pXXXXXXXX-)

    def elements(self, name: str) -> int:
        """How many elements carry the plot id ``name`` or ``name-N`` (matplotlib's gid: the plots number the
        bars of a series ``scores-0-0``, ``scores-0-1``, ...)."""
        return sum(n for key, n in self.ids.items() if key == name or key.startswith(name + "-"))

    def external(self) -> list[str]:
        """Addresses a browser would fetch from elsewhere: anything but an in-page fragment or a data: URL."""
        found = [a for a in self.addresses if not (a.startswith("#") or a.startswith("data:"))]
        found += [s for s in self.styles if "url(" in s and "url(#" not in s.replace("url( #", "url(#")]
        found += [s for s in self.styles if "@import" in s]
        return found


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._text: list[str] | None = None
        self._text_tag = ""
        self._figure: dict | None = None
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.page.tags[tag] += 1
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.page.addresses.append(value.strip())
            if name == "style" and value:
                self.page.styles.append(value)
        if attributes.get("id"):
            self.page.ids[re.sub(r"^p[0-9a-f]{8}-", "", attributes["id"])] += 1
        if tag == "svg" and attributes.get("role") == "img":
            self.page.plots.append(attributes.get("aria-label", ""))
        if tag in ("h1", "h2", "figcaption"):
            self._text, self._text_tag = [], tag
        if tag == "figure":
            self._figure = {"svg": False, "caption": False}
        elif self._figure is not None and tag in ("svg", "figcaption"):
            self._figure["svg" if tag == "svg" else "caption"] = True
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == self._text_tag and self._text is not None:
            text = " ".join("".join(self._text).split())
            (self.page.captions if tag == "figcaption" else self.page.headings).append(text)
            self._text = None
        if tag == "figure" and self._figure is not None:
            self.page.figures_with_plot += self._figure["svg"] and self._figure["caption"]
            self._figure = None
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)
        if self._in_style:
            self.page.styles.append(data)


def read_page(text: str) -> Page:
    reader = _Reader()
    reader.feed(text)
    reader.close()
    return reader.page


def check_self_contained(page: Page) -> None:
    """No script, no frame, no link to a stylesheet or font, no address outside the page."""
    for tag in ("script", "iframe", "link", "img", "object", "embed"):
        assert page.tags[tag] == 0, f"the page has a <{tag}>"
    assert page.external() == [], f"the page names outside addresses: {page.external()[:3]}"
