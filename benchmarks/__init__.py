"""``make bench``: the benchmark of the whole job against torch eager and a GEMM floor."""
