"""MkDocs hook: the reference pages are generated from the code at build time, never copied.

A page asks for a generated part with a comment on a line of its own, e.g.
``<!-- generated: schema campaign -->``; the hook replaces it before Markdown runs, so a
``mkdocs build --strict`` always shows what the code says today: the campaign and broadcast
languages from ``schema/*.schema.json`` (which ``tests/drip/test_cli_campaigns.py`` keeps equal
to the pydantic models), the command line from the typer app, the HTTP API from the FastAPI
app's own OpenAPI document, and the architecture pictures as inline SVG (no script, no CDN).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- generated: (?P<what>[a-z-]+)(?: (?P<arg>[a-z-]+))? -->$", re.M)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: _generate(m["what"], m["arg"]), markdown)


def _generate(what: str, arg: str | None) -> str:
    if what == "schema" and arg:
        return schema_markdown(arg)
    if what == "cli":
        return cli_markdown()
    if what == "openapi":
        return openapi_markdown()
    if what == "figure" and arg:
        return figure(arg)
    raise ValueError(f"unknown generated part: {what} {arg or ''}")


# --- the campaign and broadcast languages ----------------------------------------------------


def schema_markdown(kind: str) -> str:
    schema = json.loads((ROOT / "schema" / f"{kind}.schema.json").read_text())
    defs: dict[str, Any] = schema.get("$defs", {})
    out = [f"### The file: `{schema['title']}` {{#{kind}-file}}", ""]
    out += _object_table(kind, schema)
    for name in sorted(defs):
        out += ["", f"### {name} {{#{kind}-{name.lower()}}}", ""]
        out += _object_table(kind, defs[name])
    return "\n".join(out) + "\n"


def _object_table(kind: str, node: dict[str, Any]) -> list[str]:
    lines = []
    if node.get("description"):
        lines += [_text(node["description"]), ""]
    if "oneOf" in node:
        kinds = [f"`{c['required'][0]}`" for c in node["oneOf"] if c.get("required")]
        lines += [f"Exactly one of {', '.join(kinds)}.", ""]
    required = set(node.get("required", []))
    lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for field, prop in node.get("properties", {}).items():
        default = (
            "required"
            if field in required
            else _cell(json.dumps(prop["default"]))
            if "default" in prop
            else ""
        )
        meaning = prop.get("description") or _inner_description(prop)
        lines.append(f"| `{field}` | {_type(kind, prop)} | {default} | {_text(meaning)} |")
    return lines


def _inner_description(prop: dict[str, Any]) -> str:
    for option in prop.get("anyOf", []):
        if option.get("description"):
            return str(option["description"])
    return ""


def _type(kind: str, prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{kind}-{name.lower()})"
    if "anyOf" in prop or "oneOf" in prop:
        options = [o for o in prop.get("anyOf", prop.get("oneOf", [])) if o.get("type") != "null"]
        return " or ".join(_type(kind, o) for o in options) or "null"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind_of = prop.get("type", "any")
    if kind_of == "array":
        return f"list of {_type(kind, prop.get('items', {}))}"
    if kind_of == "object" and "additionalProperties" in prop:
        extra = prop["additionalProperties"]
        return f"map of {_type(kind, extra) if isinstance(extra, dict) else 'any'}"
    bounds = [
        f"{label} {prop[key]}"
        for key, label in (("minimum", ">="), ("maximum", "<="), ("maxLength", "length <="))
        if key in prop
    ]
    return str(kind_of) + (f" ({', '.join(bounds)})" if bounds else "")


def _oneline(text: str) -> str:
    return " ".join(text.replace("``", "`").split())


def _text(text: str) -> str:
    """Prose from a schema, on one line of a table or paragraph, never HTML."""
    # a brace would be read as attr_list's {: ...} attributes and vanish
    return _cell(_oneline(html.escape(text, quote=False))).replace("{", "&#123;")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# --- the command line --------------------------------------------------------------------------


def cli_markdown() -> str:
    import click
    import typer
    from typer.cli import get_docs_for_click

    from drip.cli import app

    command = typer.main.get_command(app)
    docs = get_docs_for_click(
        obj=command, ctx=click.Context(command, info_name="drip"), name="drip", title="drip"
    )
    # the page has its own title: the generated one goes, every other heading moves one down
    body = docs.split("\n", 1)[1] if docs.startswith("# ") else docs
    return re.sub(r"^(#+) ", r"#\1 ", body, flags=re.M)


# --- the HTTP API --------------------------------------------------------------------------------


def openapi_markdown() -> str:
    document = _openapi_document()
    out: list[str] = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            if method not in {"get", "post", "put", "patch", "delete", "head", "options"}:
                continue
            out += ["", f"### `{method.upper()} {path}`", ""]
            if op.get("summary"):
                out += [f"**{_text(op['summary'])}**", ""]
            if op.get("description"):
                out += [_text(op["description"]), ""]
            security = [next(iter(s)) for s in op.get("security", []) if s]
            if security:
                out += [f"Authentication: {', '.join(f'`{s}`' for s in security)}", ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | required | meaning |", "| --- | --- | --- | --- |"]
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else ''} "
                        f"| {_text(p.get('description', ''))} |"
                    )
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            if body:
                out += [f"Body: {', '.join(f'`{t}`' for t in body)}", ""]
            answers = ", ".join(
                f"`{status}` {_text(r.get('description', ''))}"
                for status, r in op.get("responses", {}).items()
            )
            out += [f"Answers: {answers}", ""]
    return "\n".join(out) + "\n"


def _openapi_document() -> dict[str, Any]:
    import logging
    import tempfile

    from campaigns import load_workspace
    from drip.settings import Settings
    from webhooks.main import create_app

    # building the app registers its metrics collector, which reads a database nobody migrated
    logging.getLogger("webhooks.metrics").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), workspace=ROOT / "examples" / "acme")
        app = create_app(settings, load_workspace(settings.workspace))
        document: dict[str, Any] = app.openapi()
    return document


# --- the architecture pictures -------------------------------------------------------------------

#: each picture: a caption and its boxes top to bottom (title, where in the code); an arrow
#: joins each box to the next. "side" boxes stand to the right of the box they follow.
FIGURES: dict[str, tuple[str, list[tuple[str, str]], list[tuple[int, str, str]]]] = {
    "packages": (
        "The packages; each arrow points at what a package imports (never the other way)",
        [
            ("drip.cli, drip.dev", "the commands and the embedded stack"),
            ("webhooks", "the FastAPI app: forms, tracking, API, dashboard"),
            ("workflows", "Temporal: journeys, broadcasts, activities, the router"),
            ("emails", "templates, render, MIME, links, SMTP"),
            ("contacts", "SQLModel tables, repository, migrations"),
            ("drip.settings", "one pydantic-settings object, DRIP_* variables"),
        ],
        [(2, "campaigns", "the language, YAML to a plan: every layer uses it")],
    ),
    "form-post": (
        "A form post, from the browser to the welcome email in the mailbox",
        [
            ("POST /forms/newsletter", "a browser or an app"),
            ("webhooks/routes/forms.py", "submit_form: cleaning, honeypot, rate limit, origin"),
            ("contacts", "contact, consent and a form event, stored first"),
            ("webhooks/journeys.py", "JourneyGateway.route(event id)"),
            ("workflows/router.py", "EventRouter: signal-with-start journey/welcome/<contact>/1"),
            ("workflows/journey.py", "the journey walks the campaign's compiled plan"),
            ("workflows/activities.py", "send_email: outbox row pending, sending, sent"),
            ("emails", "render.py, message.py, sender.py: MJML + Jinja, MIME, SMTP"),
        ],
        [],
    ),
    "open": (
        "An open, from the mail client's image request to the journey's next step",
        [
            ("GET /t/o/TOKEN.gif", "the mail client loads the pixel"),
            ("webhooks/routes/tracking.py", "TrackingMiddleware: answers the GIF, buffers the hit"),
            ("webhooks/hits.py", "HitWriter thread: stores hits every 0.25 s"),
            ("contacts/hits.py", "consume: flags machines, first human open = open event"),
            ("webhooks/journeys.py", "JourneyGateway.route(event id)"),
            ("workflows/router.py", "EventRouter: signals the waiting journey"),
            ("workflows/journey.py", "wait_for: open met, on to the tips email"),
        ],
        [],
    ),
}

_W, _H, _GAP, _SIDE = 420, 46, 26, 40


def figure(name: str) -> str:
    caption, chain, side = FIGURES[name]
    width = _W + 20 + (_SIDE + _W if side else 0)
    height = len(chain) * (_H + _GAP) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" role="img" aria-label="{_esc(caption)}" class="drip-figure">',
        f'<defs><marker id="a-{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
        "</defs>",
    ]
    for i, (title, note) in enumerate(chain):
        y = 10 + i * (_H + _GAP)
        parts.append(_box(10, y, title, note))
        if i:
            parts.append(_arrow(name, 10 + _W / 2, y - _GAP, 10 + _W / 2, y))
    last = 10 + (len(chain) - 1) * (_H + _GAP)
    for after, title, note in side:
        y = 10 + after * (_H + _GAP) + (_H + _GAP) / 2
        x = 10 + _W + _SIDE
        parts.append(_box(x, y, title, note))
        # used by every layer, so no arrow in: it imports drip.settings only
        parts.append(_arrow(name, x + _W / 2, y + _H, 10 + _W, last + _H / 2))
    parts.append("</svg>")
    svg = "".join(parts)
    return f'<figure markdown="0">{svg}<figcaption>{_esc(caption)}</figcaption></figure>\n'


def _box(x: float, y: float, title: str, note: str) -> str:
    return (
        f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="6" fill="#f3f6f4" '
        f'stroke="#2f6b3f"/>'
        f'<text x="{x + 10}" y="{y + 19}" font-family="monospace" font-size="14" '
        f'font-weight="bold" fill="#1d2420">{_esc(title)}</text>'
        f'<text x="{x + 10}" y="{y + 37}" font-family="sans-serif" font-size="12" '
        f'fill="#444">{_esc(note)}</text>'
    )


def _arrow(name: str, x1: float, y1: float, x2: float, y2: float) -> str:
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#555" stroke-width="1.5" '
        f'marker-end="url(#a-{name})"/>'
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)
