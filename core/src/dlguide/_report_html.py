"""The HTML of ``dlguide report``: one self-contained page (inline CSS, pictures as data: URIs,
no script, no external URL), built from escaped pieces.

Every string that came from a file (config values, metric names, file names) goes through
``esc`` or ``cell``; ``Html`` marks a piece that is already markup. The page's
Content-Security-Policy forbids scripts and any fetch, so even a missed escape could not run
code or reach the network.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PICTURE_BYTES = 16 * 1024 * 1024  # a picture a run wrote is far smaller; anything bigger is not embedded

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b; margin: 0 auto;
       max-width: 1200px; padding: 1.5em 2em 4em; }
h1 { font-size: 1.7em; margin-bottom: .2em; }
h2 { border-bottom: 2px solid #d6dde6; padding-bottom: .2em; margin-top: 2.2em; }
h3 { margin-top: 1.8em; }
h4 { margin: 1.4em 0 .4em; color: #3b4754; }
.meta, figcaption, .note { color: #5b6876; font-size: .9em; }
.note { background: #f4f6f9; border-left: 3px solid #9aa7b5; padding: .4em .8em; }
.warn { background: #fff6e5; border-left-color: #e0a030; color: #6b4a00; }
.badge { display: inline-block; font-size: .7em; vertical-align: middle; padding: .1em .5em; border-radius: 3px;
         background: #e0a030; color: #fff; margin-left: .5em; }
nav ul { margin: .2em 0; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: .9em; }
th, td { border: 1px solid #d6dde6; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
tr.best td { background: #e8f5e9; }
.scroll { max-height: 26em; overflow: auto; display: inline-block; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
.gallery figure { max-width: 540px; }
.gallery.wide figure { max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #d6dde6; image-rendering: auto; }
code { font-family: ui-monospace, monospace; font-size: .92em; }
"""

# no script, no fetch: pictures only from data: URIs, styles only from the page itself
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class Html(str):
    """A piece of markup that ``cell`` and ``join`` put in as it is."""


def esc(value: Any) -> Html:
    return Html(html.escape(str(value), quote=True))


def join(pieces: Iterable[str]) -> Html:
    return Html("".join(p if isinstance(p, Html) else esc(p) for p in pieces))


def number(value: Any) -> str:
    """A metric as a person reads it: five significant digits, integers as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.5g}" if math.isfinite(value) else str(value)


def cell(value: Any, tag: str = "td") -> Html:
    """One table cell: numbers right-aligned with the full value on hover, text escaped."""
    if isinstance(value, Html):
        return Html(f"<{tag}>{value}</{tag}>")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Html(f'<{tag} class="num" title="{esc(repr(value))}">{esc(number(value))}</{tag}>')
    return Html(f"<{tag}>{esc('' if value is None else value)}</{tag}>")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, highlight: Iterable[int] = (),
          scroll: bool = False) -> Html:
    marked = set(highlight)
    head = "".join(cell(h, "th") for h in header)
    best = ' class="best"'
    body = "".join(f"<tr{best if i in marked else ''}>{''.join(cell(v) for v in row)}</tr>"
                   for i, row in enumerate(rows))
    markup = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return Html(f'<div class="scroll">{markup}</div>' if scroll else markup)


def note(text: Any, *, warn: bool = False) -> Html:
    return Html(f'<p class="note{" warn" if warn else ""}">{text if isinstance(text, Html) else esc(text)}</p>')


def paragraph(text: Any, cls: str = "") -> Html:
    attr = f' class="{cls}"' if cls else ""
    return Html(f"<p{attr}>{text if isinstance(text, Html) else esc(text)}</p>")


def heading(level: int, text: Any) -> Html:
    return Html(f"<h{level}>{text if isinstance(text, Html) else esc(text)}</h{level}>")


def picture(png: bytes, caption: str) -> Html:
    """A PNG embedded as a data: URI, captioned with its file name."""
    data = base64.b64encode(png).decode("ascii")
    return Html(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>")


def gallery(pictures: Sequence[Html], *, wide: bool = False) -> Html:
    """Pictures side by side; ``wide`` ones (learning curves, a study's plots) at their own size."""
    cls = "gallery wide" if wide else "gallery"
    return Html(f'<div class="{cls}">{"".join(pictures)}</div>') if pictures else Html("")


def link(anchor: str, text: Any) -> Html:
    return Html(f'<a href="#{esc(anchor)}">{esc(text)}</a>')


@dataclasses.dataclass
class Section:
    """One input (or a run inside one) on the page: a heading, its body, its nested sections."""

    anchor: str
    title: str
    body: Html
    kind: str = ""  # "run", "study", "cv", "comparison": shown in the table of contents
    badge: str = ""  # e.g. "unfinished"
    children: list[Section] = dataclasses.field(default_factory=list)

    def render(self, level: int = 2) -> Html:
        badge = f'<span class="badge">{esc(self.badge)}</span>' if self.badge else ""
        kind = f"{esc(self.kind)}: " if self.kind else ""
        inner = "".join(child.render(min(level + 1, 4)) for child in self.children)
        return Html(f'<section id="{esc(self.anchor)}"><h{level}>{kind}{esc(self.title)}{badge}</h{level}>'
                    f"{self.body}{inner}</section>")

    def toc_entry(self) -> Html:
        badge = f" ({esc(self.badge)})" if self.badge else ""
        kind = f"{esc(self.kind)}: " if self.kind else ""
        sub = "".join(child.toc_entry() for child in self.children)
        return Html(f"<li>{kind}{link(self.anchor, self.title)}{badge}{f'<ul>{sub}</ul>' if sub else ''}</li>")


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    toc = "".join(s.toc_entry() for s in sections)
    body = "".join(s.render() for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body><header><h1>{esc(title)}</h1>"
            f'<p class="meta">{esc(subtitle)}</p><nav><strong>Contents</strong><ul>{toc}</ul></nav></header>\n'
            f"<main>{body}</main></body></html>\n")


# -- the pieces of a run's section -------------------------------------------------------------------
def flatten(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as dotted keys; values as YAML would spell them (lists as JSON)."""
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value, default=str)))
    return rows


def is_png(path: Path) -> bytes | None:
    """The file's bytes when it is a PNG of a sane size (anything else is not embedded)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_PICTURE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_MAGIC) else None


def pictures_html(folder: Path, paths: list[Path], total: int | None = None, *, wide: bool = False) -> Html:
    shown, broken = [], []
    for path in paths:
        data = is_png(path)
        caption = str(path.relative_to(folder))
        if data is None:
            broken.append(caption)
        else:
            shown.append(picture(data, caption))
    parts = [gallery(shown, wide=wide)]
    if broken:
        parts.append(note(f"not shown (not a PNG file, a link, or larger than "
                          f"{MAX_PICTURE_BYTES >> 20} MB): {', '.join(broken)}", warn=True))
    if total is not None and total > len(paths):
        parts.append(note(f"{len(paths)} of {total} pictures shown (evenly spaced where a folder holds many)"))
    return join(parts)


def split_metrics(metrics: dict[str, Any]) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """``{"val/loss": x}`` as (splits, names, {(name, split): x}); keys without a split under ''."""
    splits: list[str] = []
    names: list[str] = []
    values: dict[tuple[str, str], Any] = {}
    for key, value in metrics.items():
        if key == "best_epoch":
            continue
        split, sep, name = key.partition("/")
        if not sep:
            split, name = "", key
        splits += [split] if split not in splits else []
        names += [name] if name not in names else []
        values[(name, split)] = value
    return splits, names, values


def metrics_table(metrics: dict[str, Any]) -> Html:
    """Final metrics: one row per metric, one column per split (train, val, test)."""
    splits, names, values = split_metrics(metrics)
    if not names:
        return note("no metrics")
    rows = [[name, *(values.get((name, s)) for s in splits)] for name in names]
    return table(["metric", *(s or "value" for s in splits)], rows, scroll=len(rows) > 20)


def draw_curves(epochs: list[dict[str, Any]], title: str) -> bytes:
    """Learning curves from metrics.jsonl, one subplot per metric family (train/loss with val/loss)."""
    import io

    from matplotlib.ticker import MaxNLocator

    from dlguide._plots import figure

    families: dict[str, list[str]] = {}
    for row in epochs:
        for key in row:
            if key.count("/") == 1 and key not in families.get(key.split("/")[1], []):
                families.setdefault(key.split("/")[1], []).append(key)
    def plain(text: str) -> str:  # names from files: never read as matplotlib's $math$
        return text.replace("$", r"\$")

    names = list(families)[:9] or ["(no metrics)"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = figure(4.2 * cols, 3.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    x = [e if isinstance(e := row.get("epoch"), (int, float)) and not isinstance(e, bool) else i + 1
         for i, row in enumerate(epochs)]
    for ax, name in zip(axes, names):
        for key in families.get(name, []):
            y = [v if isinstance(v := row.get(key), (int, float)) else float("nan") for row in epochs]
            ax.plot(x, y, marker="o", markersize=3, label=plain(key))
        ax.set_title(plain(name), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if families.get(name):
            ax.legend(fontsize=8, loc="upper right")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(plain(title))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
