"""`/docs/json` (the OpenAPI document) and `/docs` (a page that browses it, offline: no CDN)."""

from __future__ import annotations

import functools

import orjson

from gateway.api.openapi import openapi_document
from gateway.api.operation import Content, Operation
from gateway.api.schemas import ANY_OBJECT, STRING, obj
from gateway.context import Gateway
from gateway.http import Request, Response


@functools.cache
def document_bytes() -> bytes:
    """The document is static: built from the route table once, on first request
    (the table imports this module, so it cannot be read at import time)."""
    from gateway.api.table import OPERATIONS
    return orjson.dumps(openapi_document(OPERATIONS))


async def docs_json(gw: Gateway, req: Request) -> Response:
    return Response(200, document_bytes())


async def docs_page(gw: Gateway, req: Request) -> Response:
    return Response(200, PAGE.encode(), b"text/html; charset=utf-8",
                    [(b"x-content-type-options", b"nosniff")])


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Ash gateway API</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
details { margin: .4em 0; border: 1px solid #ddd; border-radius: 4px; padding: .3em .6em; }
summary { cursor: pointer; }
.method { display: inline-block; width: 4.5em; font-weight: bold; font-family: monospace; }
.path { font-family: monospace; }
.lock { color: #a60; font-size: 90%; }
pre { background: #f6f6f6; padding: .5em; overflow: auto; max-height: 30em; }
table { border-collapse: collapse; } td, th { padding: .1em .6em; text-align: left; }
</style>
</head>
<body>
<h1>Ash gateway API</h1>
<p>Generated from the route table; the machine-readable document is
<a href="/docs/json">/docs/json</a> (OpenAPI 3.1). Operations marked &#128274; need
<code>Authorization: Bearer &lt;key&gt;</code>.</p>
<div id="ops">Loading /docs/json…</div>
<script>
"use strict";
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
function pre(value) { return el("pre", JSON.stringify(value, null, 2)); }
function render(doc) {
  const root = document.getElementById("ops");
  root.textContent = "";
  root.appendChild(el("p", doc.info.title + " " + doc.info.version));
  const byTag = new Map((doc.tags || []).map(t => [t.name, []]));
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, op]);
    }
  }
  for (const [tag, ops] of byTag) {
    root.appendChild(el("h2", tag));
    for (const [method, path, op] of ops) {
      const box = el("details");
      const head = el("summary");
      head.appendChild(el("span", method.toUpperCase(), "method"));
      head.appendChild(el("span", path, "path"));
      head.appendChild(document.createTextNode(" — " + (op.summary || "")));
      if (op.security && op.security.length) head.appendChild(el("span", " \\u{1F512}", "lock"));
      box.appendChild(head);
      if (op.parameters) {
        box.appendChild(el("h4", "Parameters"));
        const table = el("table");
        for (const p of op.parameters) {
          const row = el("tr");
          row.appendChild(el("td", p.name, "path"));
          row.appendChild(el("td", p.in + (p.required ? ", required" : "")));
          row.appendChild(el("td", JSON.stringify(p.schema)));
          row.appendChild(el("td", p.description || ""));
          table.appendChild(row);
        }
        box.appendChild(table);
      }
      if (op.requestBody) {
        box.appendChild(el("h4", "Request body"));
        for (const [type, media] of Object.entries(op.requestBody.content)) {
          box.appendChild(el("div", type));
          box.appendChild(pre(media.schema));
        }
      }
      box.appendChild(el("h4", "Responses"));
      for (const [status, response] of Object.entries(op.responses)) {
        for (const [type, media] of Object.entries(response.content || {})) {
          box.appendChild(el("div", status + " " + type));
          box.appendChild(pre(media.schema));
        }
      }
      root.appendChild(box);
    }
  }
  root.appendChild(el("h2", "Schemas"));
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    const box = el("details");
    box.appendChild(el("summary", name));
    box.appendChild(pre(schema));
    root.appendChild(box);
  }
}
fetch("/docs/json")
  .then(r => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
  .then(render)
  .catch(e => { document.getElementById("ops").textContent = "Could not load /docs/json: " + e; });
</script>
</body>
</html>
"""

OPENAPI = obj({"openapi": STRING, "info": ANY_OBJECT, "paths": ANY_OBJECT},
              "openapi", "info", "paths")

OPERATIONS = [
    Operation("GET", "/docs/json", docs_json, "This OpenAPI document", {200: OPENAPI},
              public=True),
    Operation("GET", "/docs", docs_page, "A page that browses this document",
              {200: Content("text/html")}, public=True),
]
