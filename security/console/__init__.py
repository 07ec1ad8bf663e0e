"""The operator web console: server-rendered pages, templates and CSS served from this package."""
