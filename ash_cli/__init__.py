"""`ash`: the operator's and developer's command line (and `ash mcp`), a client of the HTTP API.

It never imports `gateway/` or `runner/`: it speaks only the public API, as a user's tools do.
"""
