"""``songcorpus view``: a local, read-only web app over a curated corpus and its evaluations, and its static export.

The rooms, each with one job: errors.py (what a bad request or a bad command line is), corpus.py (a corpus opened
read-only: its catalog, config and shard members by offset, local or on an object store), evaluations.py (a
``songcorpus evaluate`` folder opened read-only: its summary, paired table, per-window scores and kept audio),
corpus_queries.py (the DuckDB queries: paging, filtering, sorting, the overview's figures, with bound parameters
only), query_params.py (the URL's parameters, parsed against allow-lists), formatting.py (numbers for the eye),
charts.py (server-side SVG), media.py (byte ranges of shard members and evaluation audio), drawing.py (the
``inspect`` drawing as PNG bytes), pages.py (the page contexts, shared by the server and the export), links.py (URLs
of the server and relative file names of the export), app.py (the Starlette routes and their guards), server.py
(binding and running it) and static_export.py (the same pages as files).
"""

DEFAULT_HOST = "127.0.0.1"  # this machine only; another address is the user's explicit choice
DEFAULT_PORT = 8765
