"""The port's data pipeline and BEV pooling against upstream's, measured in one process (`kit.py bench`).

    pipeline   upstream's pristine train pipeline vs the patched one (per step, DataLoader, depth stage)
    bevpool    the portable bev_pool_v3 + sort-free prepare vs upstream's sort-and-interval algorithm
"""
