"""What the host CPU can do for INT8: the quantised format that is fastest on a CPU depends on it.

Without VNNI, x86 INT8 kernels multiply u8 x s8 (VPMADDUBSW); s8 x s8 must first be widened, which is why
symmetric S8S8 QDQ ran slower than fp32 on an AVX2-only EPYC. VNNI (VPDPBUSD) and AMX tiles make INT8
dot products several times cheaper than fp32 ones. The report travels with every INT8 latency figure."""

import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuIsa:
    arch: str  # x86_64, aarch64, ...
    model: str
    avx2: bool = False
    avx512: bool = False
    vnni: bool = False  # avx512_vnni or avx_vnni
    amx_int8: bool = False
    arm_dotprod: bool = False  # aarch64 SDOT/UDOT (asimddp)
    arm_i8mm: bool = False

    @property
    def int8_class(self) -> str:
        """The capability that decides INT8 speed: amx, vnni, avx2, arm-dot, or baseline."""
        if self.amx_int8:
            return "amx"
        if self.vnni:
            return "vnni"
        if self.arm_dotprod or self.arm_i8mm:
            return "arm-dot"
        if self.avx2:
            return "avx2"
        return "baseline"

    @property
    def u8s8_may_saturate(self) -> bool:
        """x86 without VNNI/AMX multiplies u8 x s8 pairs with VPMADDUBSW, whose 16-bit pair sums saturate
        (255 * 127 * 2 > 32767). onnxruntime turns s8 activations into u8 on such CPUs, so a Q/DQ model with
        full 8-bit weights gives wrong sums there: measured on an emulated Zen 1 EPYC, relative logit MSE 0.064
        on the test ResNet where VNNI gives 0.0002 (tests/test_quantize.py)."""
        return self.arch in ("x86_64", "AMD64", "i686") and not (self.vnni or self.amx_int8)

    def summary(self) -> str:
        """One line for logs and the pytest header."""
        return (
            f"{self.model} ({self.arch}): INT8 class {self.int8_class}, VNNI {'yes' if self.vnni else 'no'}, "
            f"AMX {'yes' if self.amx_int8 else 'no'}, u8s8 sums may saturate: {'yes' if self.u8s8_may_saturate else 'no'}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "int8_class": self.int8_class, "u8s8_may_saturate": self.u8s8_may_saturate}


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The model name and the flags of the first processor in /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = path.read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model == "unknown":
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


def detect_cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIsa:
    model, flags = _cpuinfo(cpuinfo)
    return CpuIsa(
        arch=platform.machine(),
        model=model,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        vnni=bool({"avx512_vnni", "avx_vnni"} & flags),
        amx_int8="amx_int8" in flags,
        arm_dotprod="asimddp" in flags,
        arm_i8mm="i8mm" in flags,
    )
