"""Small programs the kit runs inside another interpreter (`stackenv.run_probe`), each printing one JSON line.

They run in the environment being set up or checked, which may be any Python >= 3.8: they import only the
standard library and what they probe, never the rest of the kit.
"""
