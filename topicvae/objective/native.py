"""The estimator's Gaussian kernels in C++: one pass over the pairwise entries per direction.

``gaussian_native.cpp`` computes what ``kernels._gaussian_block_forward`` and
``kernels._gaussian_block_backward`` compute, for all rows at once, visiting each pairwise entry
(b, b', v) once in the forward pass and once in the backward, with the columns' parameters
transposed to [V, B] so that the loops over b' vectorize (docs/benchmarks.md, "The objective";
the loops' layout is described in the C++ file). ``torch.compile`` of the same kernels streams
each block through several loops, one per reduction.

The file is compiled on first use with ``torch.utils.cpp_extension.load`` (a C++ compiler and
ninja are needed; about 35 s, once per machine: the build is cached under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``, under a name that hashes the
source, the flags, torch's version and the CPU's instruction sets, since the build targets this
CPU with ``-march=native``). Where the build fails, one warning says why and the estimator uses
its other kernels, which give the same values; ``TOPICVAE_NATIVE=0`` skips the build.

The kernels take float32 CPU tensors with finite entries and positive scales; everything else
(float64, a GPU, a non-finite input) runs the other kernels (``native_kernels_applicable``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path

import torch

Tensor = torch.Tensor

#: "0" never builds or runs the native kernels; unset, training uses them where it would compile.
NATIVE_ENVIRONMENT_VARIABLE = "TOPICVAE_NATIVE"
SOURCE = Path(__file__).with_name("gaussian_native.cpp")
#: -ffast-math lets the compiler vectorize the reductions over b' (it assumes finite floats: the
#: kernels keep every float finite); -march=native uses this CPU's vector width (AVX2: 8 floats);
#: -fopenmp makes at::parallel_for (an OpenMP pragma in torch's headers) run on torch's threads:
#: the module's libgomp.so.1 is the one torch has loaded already, so there is one thread pool.
#: On x86-64, -mprefer-vector-width=256: GCC's tuning for some CPUs (AMD Zen 1, -mtune=znver1)
#: vectorizes 4 floats wide by default, which made these kernels 1.16 times slower there (4.11 against
#: 3.55 ns per entry at B = 1024, docs/benchmarks.md "Four rows per loop").
CFLAGS = ("-O3", "-march=native", "-ffast-math", "-std=c++20", "-fopenmp") + (
    ("-mprefer-vector-width=256",) if platform.machine().lower() in ("x86_64", "amd64") else ()
)
LDFLAGS = ("-fopenmp",)
#: A batch of one's off-diagonal log weight is -inf (no other item); the fast-math kernels take
#: this finite stand-in, whose exps floor to e^-60 exactly as -inf's do.
NEGATIVE_LARGE = -1e30

__all__ = ["NATIVE_ENVIRONMENT_VARIABLE", "native_kernels_applicable", "native_kernels_available", "native_module"]


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags: a build for one CPU must not load on another."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _extension_name() -> str:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), repr((CFLAGS, LDFLAGS)).encode(), torch.__version__.encode(),
                 _cpu_signature().encode(), sys.version.encode()):
        digest.update(part)
    return f"topicvae_gaussian_native_{digest.hexdigest()[:16]}"


class _NativeKernels:
    """The compiled module, built once per process on first use, or the reason it is not there."""

    def __init__(self) -> None:
        self._module = None
        self.failure: str | None = None

    def switched_off(self) -> bool:
        return os.environ.get(NATIVE_ENVIRONMENT_VARIABLE) == "0"

    def module(self):
        """The module, or None (with one warning the first time a build fails)."""
        if self.switched_off():  # the switch wins, also over a module built earlier in the process
            return None
        if self._module is not None or self.failure is not None:
            return self._module
        try:
            self._module = self._build()
        except Exception as error:  # noqa: BLE001 -- any toolchain failure: the other kernels give the same values
            message = str(error).strip().splitlines()
            self.failure = f"{type(error).__name__}: {message[0] if message else ''}"
            warnings.warn(
                f"the native HFVAE kernels could not be built ({self.failure}); the estimator runs its other kernels, "
                f"which give the same values more slowly (set {NATIVE_ENVIRONMENT_VARIABLE}=0 to skip the build)",
                RuntimeWarning,
                stacklevel=3,
            )
        return self._module

    @staticmethod
    def _build():
        from torch.utils import cpp_extension

        if shutil.which("ninja") is None:
            # a pip-installed ninja lies beside this interpreter, which need not be on PATH
            beside = Path(sys.executable).parent
            if (beside / "ninja").exists():
                os.environ["PATH"] = f"{beside}{os.pathsep}{os.environ.get('PATH', '')}"
        return cpp_extension.load(
            name=_extension_name(), sources=[str(SOURCE)], extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS),
            verbose=False,
        )


_NATIVE = _NativeKernels()


def native_module():
    """The built extension (building it on the first call), or None where it cannot be built or is switched off."""
    return _NATIVE.module()


def native_kernels_available() -> bool:
    """Whether the native kernels run in this process (building them on the first call, about 35 s once per machine)."""
    return native_module() is not None


#: The native kernels need every standardized distance s = (z - mu) / sigma to stay far from
#: float32's overflow (3.4e38) with its square summed over many variables: inputs whose bound
#: (max |z| + max |mu|) / min sigma reaches this, or with sigma below MIN_SCALE (1 / sigma would
#: overflow), run the eager kernels, which handle infinities as torch does.
MAX_STANDARDIZED = 1e17
MIN_SCALE = 1e-18


def native_kernels_applicable(z: Tensor, loc: Tensor, scale: Tensor) -> bool:
    """Whether these inputs suit the native kernels: float32 on the CPU, finite, scales in range.

    The kernels are built with -ffast-math, which assumes finite floats throughout, so any
    input that could make an intermediate infinite or NaN goes to the eager kernels instead.
    """
    tensors = (z, loc, scale)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    with torch.no_grad():
        if not (torch.isfinite(z).all() and torch.isfinite(loc).all() and torch.isfinite(scale).all()):
            return False
        smallest = float(scale.min()) if scale.numel() else 1.0
        reach = (float(z.abs().max()) if z.numel() else 0.0) + (float(loc.abs().max()) if loc.numel() else 0.0)
        return smallest >= MIN_SCALE and reach / smallest < MAX_STANDARDIZED
