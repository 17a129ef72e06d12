"""`drop` stage: latency-aware residual block dropping with fusable 1x1 adapters (PRACTISE, METHODS.md §2).

blocks (block graph) -> latency_table (measured savings) -> adapters + recoverability (what each drop
costs) -> select (greedy score = recoverability / saving) -> recover (feature KD, then the adapters folded
away) ; filter_prune is the channel-pruning baseline the benchmark compares against.

The technique's public functions, for the stage here and for the budget search, which combines them with
precision; other packages import these names from `pipeline.drop`, never its modules (tests/test_layers.py)."""

from pipeline.drop.blocks import droppable_blocks
from pipeline.drop.latency_table import cache_key as block_table_key
from pipeline.drop.latency_table import load_or_measure as block_latency_table
from pipeline.drop.recover import Recovered, recover
from pipeline.drop.recoverability import RecoverabilityProbe, RecoverabilitySettings
from pipeline.drop.select import LatencyBudget

__all__ = [
    "LatencyBudget",
    "RecoverabilityProbe",
    "RecoverabilitySettings",
    "Recovered",
    "block_latency_table",
    "block_table_key",
    "droppable_blocks",
    "recover",
]
