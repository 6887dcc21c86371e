"""The renderers of docs/render_tables.py: each function returns one table's Markdown from a results file."""
