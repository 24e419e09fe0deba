"""A static space without index.html shows its README.md, as on Hugging Face (organization cards).

Hugging Face runs a `sdk: static` space whose repo holds only README.md (the "README" space of an
organization is its card) and shows that README. Spaceport does the same: such a space is served by this
module's `serve()` (the repository as files, like `python -m http.server`, but `/` and `/index.html` answer
the README's body rendered as a page). The module is stdlib only and self-contained, because it runs with
the space's own interpreter as `python -c SOURCE PORT HOST DIRECTORY` (`card_command`): no file of it has to
exist in the venv or the image. The rendering is a small Markdown subset (headings, paragraphs, lists,
fenced code, links, images, emphasis, inline code); inline HTML passes through, as org cards use it.
The README is the owner's content served on the app's own origin, like any file of a static space.
"""

from __future__ import annotations

import html
import re
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_INLINE = (
    (re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)"), r'<img alt="\1" src="\2">'),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"<em>\1</em>"),
)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^\s*[-*+]\s+(.*)$")


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        for pattern, replacement in _INLINE:
            part = pattern.sub(replacement, part)
        out.append(part)
    return "".join(out)


def body_of(readme: str) -> str:
    """README.md without its YAML front matter."""
    match = re.match(r"^---\s*\n.*?\n---\s*(\n|$)", readme, re.S)
    return readme[match.end():] if match else readme


def render_markdown(text: str) -> str:
    """The Markdown subset above as HTML (block by block)."""
    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if code is not None:
            if line.strip().startswith("```"):
                out.append(f"<pre><code>{html.escape(chr(10).join(code))}</code></pre>")
                code = None
            else:
                code.append(line)
        elif line.strip().startswith("```"):
            flush()
            code = []
        elif not line.strip():
            flush()
        elif heading := _HEADING.match(line):
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif item := _ITEM.match(line):
            if para:
                flush()
            items.append(item.group(1))
        elif line.lstrip().startswith("<"):
            flush()
            out.append(line)
        else:
            para.append(line.strip())
    if code is not None:
        out.append(f"<pre><code>{html.escape(chr(10).join(code))}</code></pre>")
    flush()
    return "\n".join(out)


def card_page(readme: str, title: str = "") -> str:
    """The whole page for a README (its front matter's title, if any, as the page title)."""
    found = re.search(r"^title:\s*(.+?)\s*$", readme[: len(readme) - len(body_of(readme))], re.M)
    name = html.escape(title or (found.group(1).strip("\"'") if found else "README"))
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width\"><title>{name}</title>\n<style>body{{font-family:system-ui,sans-serif;"
            "max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}img{{max-width:100%}}</style>"
            f"</head>\n<body>\n{render_markdown(body_of(readme))}\n</body></html>\n")


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/index.html"):
            super().do_GET()
            return
        readme = Path(self.directory) / "README.md"
        text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
        data = card_page(text).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(port: int, host: str, directory: str) -> None:
    server = ThreadingHTTPServer((host, port), partial(_Handler, directory=directory))
    print(f"spaceport: serving README.md of {directory} as the page on {host}:{port} (no index.html)", flush=True)
    server.serve_forever()


def card_command(python: str, port: str, host: str, directory: str) -> list[str]:
    """argv that runs this module's server with `python` (the source is passed inline)."""
    return [python, "-c", Path(__file__).read_text(encoding="utf-8"), port, host, directory]


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3])
