"""Self-contained HTML pages (plots embedded as data URIs): one style for every report."""

from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right;white-space:nowrap}th{background:#f3f3f3}img{max-width:100%}.pass{color:#1a7f37}"
    ".fail{color:#cf222e}.undecided{color:#9a6700}figure{margin:1.5em 0}figcaption{color:#666;font-size:12px}"
    "td.text{text-align:left;white-space:normal}.lead{font-size:17px;line-height:1.5;max-width:60em}"
)


def embedded_png(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


def html_page(title: str, body: list[str]) -> str:
    return "\n".join(
        [
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            f"<style>{STYLE}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            *body,
            "</body></html>",
        ]
    )
