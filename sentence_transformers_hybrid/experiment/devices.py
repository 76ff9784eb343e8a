"""Where a preset runs and in which precision: CUDA in bf16, else the CPU in bf16 autocast when it has bf16
instructions (AMX-BF16 or AVX512-BF16), else float32 with a warning that states the expected time.

:func:`select_device` decides once per experiment; the :class:`DeviceSetup` it returns is written into
``config.json`` and ``runs.json`` (``device``), gives the trainer its ``bf16`` / ``use_cpu`` arguments, and wraps every
encoding pass (evaluation, CKA, the frozen encoder's cache) in the same autocast (:meth:`DeviceSetup.autocast`).

Example::

    >>> setup = select_device("cpu", prefer_bf16=False)
    >>> setup.device, setup.dtype
    ('cpu', 'float32')
    >>> with setup.autocast():
    ...     pass
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

__all__ = ["DeviceSetup", "cpu_info", "cpuinfo_fields", "select_device"]

#: CPU flags (as /proc/cpuinfo spells them) that give oneDNN fast bf16 matmuls.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpuinfo_fields(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, str]:
    r"""The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (``{}`` where there is no such file).

    Example::

        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder, "cpuinfo")
        ...     _ = path.write_text("processor\t: 0\ncpu family\t: 25\nmodel name\t: AMD EPYC\nflags\t: fpu avx2\n\n"
        ...                         "processor\t: 1\nmodel name\t: Other\n")
        ...     fields = cpuinfo_fields(path)
        >>> fields["cpu family"], fields["model name"], fields["flags"].split()
        ('25', 'AMD EPYC', ['fpu', 'avx2'])
    """
    path = Path(cpuinfo)
    if not path.is_file():
        return {}
    first_block = path.read_text(encoding="utf-8", errors="replace").split("\n\n", 1)[0]
    fields: dict[str, str] = {}
    for m in re.finditer(r"^([^:\n]+?)\s*:\s*(.*)$", first_block, re.M):
        fields.setdefault(m.group(1).strip(), m.group(2).strip())
    return fields


def cpu_info(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU model, core count and the bf16-related flags of this machine (from ``/proc/cpuinfo`` on Linux).

    Example::

        >>> info = cpu_info()
        >>> sorted(info)
        ['bf16_flags', 'cores', 'model']
    """
    fields = cpuinfo_fields(cpuinfo)
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return {"model": model, "cores": os.cpu_count(), "bf16_flags": [f for f in BF16_FLAGS if f in flags]}


@dataclass
class DeviceSetup:
    """The device and precision of an experiment, and what it was chosen from."""

    device: str  # "cuda" | "cpu" | any torch device string
    dtype: str  # "bfloat16" | "float32"
    name: str  # in words: the GPU's name, or "cpu (<model>, <n> cores)"
    reason: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """In words, for ``runs.json``: the device, the CPU's bf16 flags when on a CPU, and the precision."""
        flags = f"; flags: {', '.join(self.cpu.get('bf16_flags') or []) or 'no bf16'}" if self.device_type == "cpu" else ""
        precision = "bf16 autocast" if self.bf16 and self.device_type == "cpu" else self.dtype
        return f"{self.name}{flags}; {precision}"

    def with_dtype(self, want: bool | str) -> DeviceSetup:
        """This device in the precision a preset field asks for: ``True`` / ``"bfloat16"``, ``False`` /
        ``"float32"``, or ``"auto"`` (this setup's own: bf16 where the device supports it)."""
        if want == "auto":
            return self
        if want not in (True, False, "bfloat16", "float32"):
            raise ValueError(f"precision must be True, False, 'bfloat16', 'float32' or 'auto', got {want!r}")
        dtype = "bfloat16" if want in (True, "bfloat16") else "float32"
        return replace(self, dtype=dtype, reason=self.reason if dtype == self.dtype else f"{dtype} requested")

    def training_arguments(self) -> dict[str, Any]:
        """The ``SentenceTransformerTrainingArguments`` that make the trainer run here: ``bf16`` and ``use_cpu``."""
        return {"bf16": self.bf16, "use_cpu": self.device_type == "cpu"}

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """``torch.autocast`` in bf16 on this device when the setup is bf16; a no-op context otherwise."""
        if not self.bf16:
            yield
            return
        import torch

        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            yield


def select_device(device: str | None = None, *, prefer_bf16: bool = True, seconds_per_run_fp32: float | None = None,
                  require_cuda: bool = False) -> DeviceSetup:
    """Choose where to run: ``device`` if given, else CUDA when available, else the CPU.

    Precision: bf16 on CUDA; bf16 autocast on a CPU with :data:`BF16_FLAGS`; otherwise float32, with a warning that
    gives ``seconds_per_run_fp32`` (when known) so a slow run is never a silent surprise. ``require_cuda`` raises a
    clear ``RuntimeError`` when no CUDA device is visible (the ``gpu`` preset).
    """
    import torch

    cuda = torch.cuda.is_available()
    if require_cuda and not cuda and (device is None or str(device).startswith("cuda")):
        raise RuntimeError(
            "this preset trains the full model and needs a CUDA GPU (none is visible). Pass --device cpu to run it on "
            "the CPU anyway, or use --preset finetune (the same protocol on whatever device is there)."
        )
    if device is None:
        device = "cuda" if cuda else "cpu"
    info = cpu_info()
    if str(device).startswith("cuda"):
        return DeviceSetup(str(device), "bfloat16" if prefer_bf16 else "float32", torch.cuda.get_device_name(0),
                           "CUDA", info)
    name = f"cpu ({info['model']}, {info['cores']} cores)"
    if prefer_bf16 and info["bf16_flags"]:
        return DeviceSetup(str(device), "bfloat16", name, f"CPU with {', '.join(info['bf16_flags'])}", info)
    if prefer_bf16:
        est = f" (about {seconds_per_run_fp32 / 60:.0f} min a run)" if seconds_per_run_fp32 else ""
        logger.warning(
            "this CPU (%s) has no bf16 instructions (%s): training and encoding run in float32, about 2-4x slower than "
            "with bf16%s", info["model"], " / ".join(BF16_FLAGS), est,
        )
        return DeviceSetup(str(device), "float32", name, "CPU without bf16 instructions", info)
    return DeviceSetup(str(device), "float32", name, "float32 requested", info)
