"""`pipeline doctor`: what is installed where, what each stage will use for a target, and what is missing, on one
screen (issue 23). The device side is the same probe the remote harness runs (`portable.device_bench --facts`),
so the report says what a build would find there, not what the target file hopes for."""

import platform
import shutil
import subprocess

from pipeline.errors import PipelineError
from pipeline.jetson_releases import dla_refusal
from pipeline.portable.device_bench import device_facts
from pipeline.targets import Target


def local_facts() -> dict:
    """This machine: the device script's facts plus PyTorch, CUDA, the GPU, onnxruntime's providers and TensorRT."""
    facts = device_facts()
    try:
        import torch

        facts["torch_version"] = torch.__version__
        facts["cuda_available"] = torch.cuda.is_available()
        if facts["cuda_available"]:
            facts["gpu_name"] = torch.cuda.get_device_name(0)
            facts["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            facts["cuda_version"] = torch.version.cuda
    except ImportError:
        facts["torch_version"] = None
    try:
        import onnxruntime

        facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        facts["onnxruntime_providers"] = []
    from pipeline.runtimes.tensorrt_runner import tensorrt_available

    facts["tensorrt_usable"] = tensorrt_available()  # None: usable; else why not, in one line
    facts["nvidia_smi"] = nvidia_smi_here()
    return facts


def remote_facts(target: Target) -> dict:
    """The device's facts, from the portable probe run over SSH (no model is copied)."""
    from pipeline.measure.settings import measurement_options
    from pipeline.remote.harness import remote_run
    from pipeline.remote.ssh import SshHost

    remote = measurement_options(target)["remote"]  # the SSH settings every remote measurement uses
    host = SshHost.from_settings(target.host, remote)
    result = remote_run(host, {}, {}, python=remote["python"], workdir=remote["workdir"], facts_only=True)
    done = host.run(" ".join(NVIDIA_SMI), timeout=30, check=False)
    return {**result["device"], "gpu": _gpu_named(done)}


NVIDIA_SMI = ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"]


def _gpu_named(done) -> str | None:
    """What nvidia-smi answered (None without a GPU or without nvidia-smi, as on a Jetson)."""
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def device_runtime(facts: dict) -> str | None:
    """What the device script would time with, in its order: TensorRT 10+ from Python, trtexec, onnxruntime."""
    version = facts.get("tensorrt_version")
    if version and int(str(version).split(".")[0]) >= 10 and facts.get("cuda_buffers", ["unknown"]):
        return "tensorrt"  # the Python API, with pycuda or cuda-python for its buffers
    if facts.get("trtexec"):
        return "trtexec"
    return "onnxruntime" if facts.get("onnxruntime_version") else None


def diagnose(target: Target, here: dict, device: dict | None) -> dict:
    """What each stage will use and what is missing, from the facts of this machine and of the device."""
    trt = target.tensorrt
    missing, uses = [], {}
    if target.runtime == "onnxruntime":
        uses["latency"] = f"onnxruntime {here.get('onnxruntime_version')} here ({here.get('cpu')})"
        uses["engine"] = "none (the target runs onnxruntime)"
    elif device is not None:
        runtime = device_runtime(device)
        version = device.get(f"{runtime}_version") if runtime else None
        uses["latency"] = f"{runtime or 'nothing'} {version or ''} on {target.host}".replace("  ", " ")
        if runtime == "onnxruntime":
            missing.append(f"{target.host} has neither TensorRT's Python API nor trtexec: its latency is onnxruntime's")
        built_with = device.get("tensorrt_version") or device.get("trtexec_version")
        uses["engine"] = f"built on {target.host} with TensorRT {built_with}" if built_with else "not buildable there"
        if built_with and not target.accepts_tensorrt(str(built_with)):
            missing.append(f"{target.host} has TensorRT {built_with}; {target.name} wants {_wanted(target)}")
        if runtime is None:
            missing.append(f"{target.host} has no runtime the device script can use (tensorrt, trtexec, onnxruntime)")
    else:
        reason = here.get("tensorrt_usable")
        if reason is None:
            uses["latency"] = f"TensorRT {here.get('tensorrt_version')} here on {here.get('gpu_name')}"
            uses["engine"] = f"built here with TensorRT {here.get('tensorrt_version')}"
            if not target.accepts_tensorrt(str(here.get("tensorrt_version"))):
                missing.append(f"TensorRT {here.get('tensorrt_version')} here; {target.name} wants {_wanted(target)}")
        else:
            uses["latency"] = f"proxy: onnxruntime {here.get('onnxruntime_version')} on this CPU stands in for tensorrt"
            uses["engine"] = "not built here: engine/build_on_device.sh picks the device's trtexec command"
            missing.append(f"TensorRT here: {reason}; or give --host user@device")
    uses["accuracy"] = f"onnxruntime {here.get('onnxruntime_version')} here"
    uses["training"] = "cuda" if here.get("cuda_available") else f"CPU ({here.get('cpu_count')} cores)"
    refusal = dla_refusal(target.name, trt.releases, trt.dla_core, trt.min_version, trt.max_version)
    if refusal:
        missing.append(refusal)
    return {"uses": uses, "missing": missing}


def _wanted(target: Target) -> str:
    trt = target.tensorrt
    listed = ", ".join(r["tensorrt"] for r in trt.releases)
    return f"TensorRT {trt.min_version or 'any'} to {trt.max_version or 'any'}" + (f" ({listed})" if listed else "")


def doctor(target: Target) -> dict:
    here = local_facts()
    device = None
    if target.is_remote:
        try:
            device = remote_facts(target)
        except PipelineError as error:
            raise PipelineError(f"doctor: cannot probe {target.host}: {error}") from None
    report = {"target": target.name, "runtime": target.runtime, "host": target.host, "here": here, "device": device}
    return {**report, **diagnose(target, here, device), "python": platform.python_version()}


def nvidia_smi_here() -> str | None:
    """The GPU nvidia-smi names here (None without one): a second witness beside torch's view."""
    if shutil.which("nvidia-smi") is None:
        return None
    return _gpu_named(subprocess.run(NVIDIA_SMI, capture_output=True, text=True))
