"""A small document model rendered twice: self-contained HTML and Markdown with PNG files.

Readable at 700 px: every table sits in a box that scrolls sideways rather than widening the
page, cells wrap at spaces (never inside a word or number), and figures shrink to the page width.
A table's CSV always holds every column; what the page shows of it may be split into narrower
views (`Document.table`).
"""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; overflow-wrap: anywhere; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.table-wrap { overflow-x: auto; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; }
.verdict { font-size: 1.15em; padding: 0.6em 1em; background: #eef4ff; }
p { overflow-wrap: anywhere; } pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
"""
# PNG figures: tight bounding box so no label is cut at the canvas edge; this dpi keeps an 8-inch
# figure under 900 px wide, which the page scales down to its width.
SAVEFIG = {"format": "png", "dpi": 110, "bbox_inches": "tight"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


class Document:
    def __init__(self, title: str, out_dir: Path) -> None:
        self.title, self.out_dir = title, out_dir
        self.html: list[str] = []
        self.md: list[str] = []
        self.tables: list[Path] = []
        self._section = ""

    def section(self, title: str) -> None:
        self._section = _slug(title)
        self.html.append(f'<h2 id="{self._section}">{html.escape(title)}</h2>')
        self.md.append(f"## {title}\n")

    def paragraph(self, text: str, css_class: str | None = None) -> None:
        attr = f' class="{css_class}"' if css_class else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")
        self.md.append(f"**{text}**\n" if css_class == "verdict" else f"{text}\n")

    def code(self, text: str) -> None:
        self.html.append(f"<pre>{html.escape(text)}</pre>")
        self.md.append(f"```\n{text}\n```\n")

    def table(self, frame: pd.DataFrame, name: str, views: Sequence[pd.DataFrame] | None = None,
              floatfmt: str = ".4g") -> None:
        """Save `frame` as NAME.csv beside the report and show it, or show `views` of it instead.

        Views are narrower tables made from the same rows (e.g. one with the accuracy columns, one
        with the cost columns), so the page stays readable while the CSV keeps everything.
        """
        path = self.out_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.tables.append(path)
        markdown = []
        for view in views if views is not None else [frame]:
            # NaN shows as a blank cell
            shown = view.map(lambda v: ("" if v != v else format(v, floatfmt)) if isinstance(v, float) else v)
            self.html.append(f'<div class="table-wrap">{shown.to_html(index=False, escape=True, border=0)}</div>')
            header = "| " + " | ".join(map(str, shown.columns)) + " |"
            rule = "|" + "|".join("---" for _ in shown.columns) + "|"
            rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
                    for row in shown.itertuples(index=False)]
            markdown.append("\n".join([header, rule, *rows]))
        self.md.append("\n\n".join(markdown) + f"\n\n(table: `{path.name}`)\n")

    def figure(self, fig, name: str, caption: str) -> None:
        """Inline the figure in the HTML, save NAME.png for the Markdown."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, **SAVEFIG)
        plt.close(fig)
        png = buffer.getvalue()
        (self.out_dir / f"{name}.png").write_bytes(png)
        encoded = base64.b64encode(png).decode("ascii")
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        self.md.append(f"![{caption}]({name}.png)\n\n*{caption}*\n")

    def write(self) -> dict:
        title = html.escape(self.title)
        page = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{title}</title><style>{CSS}</style></head><body><h1>{title}</h1>"
                + "\n".join(self.html) + "</body></html>\n")
        paths = {"html": self.out_dir / "report.html", "markdown": self.out_dir / "report.md", "tables": self.tables}
        paths["html"].write_text(page)
        paths["markdown"].write_text(f"# {self.title}\n\n" + "\n".join(self.md))
        return paths
