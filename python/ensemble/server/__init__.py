"""The HTTP server: RSGI app, route table, request context, error rendering, lifecycle."""
