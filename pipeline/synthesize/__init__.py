"""Data-free synthesis: generators trained against a frozen teacher (DAFL, with BN-statistics matching)."""
