"""Pure maths of a study: split planning, crop geometry, top-k merging, metrics, statistics.

Arrays in, arrays out. Nothing here imports Ray or FAISS (a test enforces it), so every function
runs and is tested without a cluster.
"""
