"""`catalog compare`: engines side by side on one prompt x product x seed grid, scored and reported.

engines.py (the Engine interface, our recipe), bedrock.py and openai_images.py (external engines), prices.py (the
editable price table), grid.py (cells, resumable, scored once), report.py (report.html, metrics.csv, summary.json),
rejected.py (the learning loop: rejected cases re-run), compare.py (all of it in one call).
"""
