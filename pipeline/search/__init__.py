"""Latency-budget search: the most accurate (base, dropped blocks, precision) that meets a budget, measured."""
