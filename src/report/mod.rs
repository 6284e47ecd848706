//! Markdown, HTML (inline SVG charts) and JSON renderings of a run folder.
