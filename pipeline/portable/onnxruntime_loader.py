"""The one place an onnxruntime session is opened: with explicit, reproducible threading (the default takes
every core, which makes latency depend on whatever else the machine is doing)."""

from __future__ import annotations  # Python 3.8 on JetPack 5

CPU = "CPUExecutionProvider"


def provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider  # ("CUDAExecutionProvider", {options})


def usable_providers(requested, available) -> list:
    """The requested providers this onnxruntime build has, CPU always last as the fallback: a CUDA request on
    a CPU-only install runs on the CPU, and the session's get_providers() says so."""
    chosen = [p for p in (requested or []) if provider_name(p) in set(available)]
    if CPU not in [provider_name(p) for p in chosen]:
        chosen.append(CPU)
    return chosen


def onnxruntime_session(path: str, threads: int | None = None, providers=None, optimize_graph: bool = True):
    """An InferenceSession over `path`. threads None or 0 is onnxruntime's default (one per physical core).

    `optimize_graph=False` runs the graph as written: no fusion, so the QuantizeLinear/DequantizeLinear pairs
    of a Q/DQ model execute one by one in float around fp32 convolutions (the arithmetic TensorRT's INT8
    kernels reproduce with exact int32 sums) instead of being fused into this CPU's integer kernels."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    # Classifiers are chains of ops: sequential execution with one inter-op thread avoids spinning threads that
    # only steal cores from the intra-op pool.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Intra-op workers spin after a run and keep a core busy: in interleaved rounds that core is taken from the
    # next model's session, so its latency depended on which session ran before it (a 0.26 ms ResNet-20 on the
    # 2-core Xeon read 0.26 or 0.38 ms per round beside 9 other sessions). Stopping the spin when a run returns
    # costs each run one wake-up (0.30 ms, alone or beside others) and makes every session's figure its own.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize_graph else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3  # errors only: warnings would clutter the CLI's stderr
    chosen = usable_providers(providers or [CPU], ort.get_available_providers())
    return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
