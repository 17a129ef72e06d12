"""`drop` stage: latency-aware residual block dropping with fusable 1x1 adapters (PRACTISE, METHODS.md §2).

blocks (block graph) -> latency_table (measured savings) -> adapters + recoverability (what each drop
costs) -> select (greedy score = recoverability / saving) -> finetune (recovery) -> fuse (adapters
folded away) ; filter_prune is the channel-pruning baseline the benchmark compares against."""
