"""A small document model rendered twice: self-contained HTML and Markdown with PNG files."""
from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .verdict { font-size: 1.15em; padding: 0.6em 1em; background: #eef4ff; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
"""


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

    def table(self, frame: pd.DataFrame, name: str, floatfmt: str = ".4g") -> None:
        """Show `frame` and save it as NAME.csv beside the report."""
        path = self.out_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
        self.tables.append(path)
        # NaN shows as a blank cell
        shown = frame.map(lambda v: ("" if v != v else format(v, floatfmt)) if isinstance(v, float) else v)
        self.html.append(shown.to_html(index=False, escape=True, border=0))
        header = "| " + " | ".join(map(str, shown.columns)) + " |"
        rule = "|" + "|".join("---" for _ in shown.columns) + "|"
        rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |"
                for row in shown.itertuples(index=False)]
        self.md.append("\n".join([header, rule, *rows]) + f"\n\n(table: `{path.name}`)\n")

    def figure(self, fig, name: str, caption: str) -> None:
        """Inline the figure in the HTML, save NAME.png for the Markdown."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        png = buffer.getvalue()
        (self.out_dir / f"{name}.png").write_bytes(png)
        encoded = base64.b64encode(png).decode("ascii")
        self.html.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        self.md.append(f"![{caption}]({name}.png)\n\n*{caption}*\n")

    def write(self) -> dict:
        page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title><style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.html) + "</body></html>\n")
        paths = {"html": self.out_dir / "report.html", "markdown": self.out_dir / "report.md", "tables": self.tables}
        paths["html"].write_text(page)
        paths["markdown"].write_text(f"# {self.title}\n\n" + "\n".join(self.md))
        return paths
