"""The profile schema: field kinds and ranges, the spec of each part kind and of a device."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar


KINDS = ("flash", "dram", "compute", "device")
PART_KINDS = ("flash", "dram", "compute")
FOLDERS = {"flash": "flash", "dram": "dram", "compute": "compute", "device": "devices"}




# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Field:
    kind: str                 # size | rate | time | energy | flops | count | fraction | number
    required: bool = True
    default: Any = None
    zero_ok: bool = False
    inf_ok: bool = False
    integer: bool = False
    help: str = ""
    lo: float = 0.0             # plausible range in base units (beyond it: a typo or a missing unit)
    hi: float = math.inf


KB, GB, TB = 1e3, 1e9, 1e12
#: a device's own values beside its parts: what decides the DRAM left for the cache (with
#: dram_capacity; see engine.budget), and the engine assumption the device stands for
#: a device's DRAM: at most 64 TiB (beyond any machine that runs an LLM; 1e30 GiB is a typo)
DRAM_CAPACITY = Field("size", integer=True, help="DRAM the device has", lo=1, hi=1 << 46)
DEVICE_VALUE_FIELDS: dict[str, Field] = {
    "usable_dram_fraction": Field("fraction", default=1.0, help="share of the DRAM the model may use"),
    "runtime_reserve": Field("size", default=0, zero_ok=True, integer=True, hi=1 << 42,
                             help="bytes the inference runtime keeps for itself (buffers, code)"),
    "miss_via_dram": Field("bool", default=True, help="columns read from flash pass through DRAM to the compute "
                                                      "(the engine's default for runs on this device)"),
    "prefetch": Field("bool", default=True, help="columns that do not depend on the token are read ahead (the "
                                                 "engine's default for runs on this device)"),
}
FLASH_FIELDS: dict[str, Field] = {
    "latency": Field("time", zero_ok=True, help="per-request time before data flows (command overhead + NAND tR)",
                     hi=0.1),
    "unit_bandwidth": Field("rate", inf_ok=True, help="bytes/s one internal parallel unit streams at", lo=KB, hi=TB),
    "units": Field("count", inf_ok=True, help="internal parallel units (channels x dies)", lo=1, hi=1 << 20),
    "queue_depth": Field("count", inf_ok=True, help="host queue depth (requests outstanding at most)", lo=1,
                         hi=1 << 20),
    "link_bandwidth": Field("rate", inf_ok=True, help="host interface bytes/s, shared by all units", lo=KB, hi=TB),
    "page_bytes": Field("size", integer=True, help="read granularity: requests are aligned to pages", lo=1,
                        hi=1 << 24),
    "max_request_bytes": Field("size", inf_ok=True, integer=True, help="longer reads are split", lo=1, hi=1 << 34),
    "random_penalty": Field("time", required=False, default=0.0, zero_ok=True,
                            help="extra latency of a request that does not continue the previous one", hi=0.1),
    "host_overhead": Field("time", required=False, default=0.0, zero_ok=True,
                           help="host time to submit one request (driver, syscall), serial over requests", hi=0.1),
    "read_energy_per_byte": Field("energy", required=False, zero_ok=True, help="J per byte read", hi=1e-6),
}
DRAM_FIELDS: dict[str, Field] = {
    "bandwidth": Field("rate", help="peak bytes/s (bus width x transfer rate)", lo=1e6, hi=100 * TB),
    "latency": Field("time", zero_ok=True, help="access latency", hi=1e-3),
    "efficiency": Field("fraction", required=False, default=1.0, help="sustained share of the peak"),
    "read_energy_per_byte": Field("energy", required=False, zero_ok=True, help="J per byte read", hi=1e-6),
}
COMPUTE_FIELDS: dict[str, Field] = {
    "fp16_flops": Field("flops", help="dense fp16 peak FLOP/s", lo=1e6, hi=1e19),
    "int8_ops": Field("ops", required=False, help="dense int8 peak OP/s", lo=1e6, hi=1e19),
    "efficiency": Field("fraction", required=False, default=1.0, help="achieved share of the peak"),
}
NUMERIC_FIELDS = {"flash": FLASH_FIELDS, "dram": DRAM_FIELDS, "compute": COMPUTE_FIELDS}
META_FIELDS = ("name", "kind", "description", "source", "notes")
DEVICE_FIELDS = ("name", "kind", "description", "source", "notes", "flash", "dram", "compute", "dram_capacity",
                 "usable_dram_fraction", "runtime_reserve", "miss_via_dram", "prefetch",
                 "overrides")
VALUE_KEYS = ("value", "source", "assumed", "note")
CITED_FIELDS = ("source", "assumed", "note", "rand_4k_iops", "rand_4k_qd", "seq_read", "seq_block", "seq_qd", "also")
ALSO_FIELDS = ("iops", "bandwidth", "block", "qd", "pattern", "source", "assumed", "note")


@dataclass(frozen=True)
class CitedFigure:
    """One figure a flash profile cites: ``iops`` (requests/s) or ``bandwidth`` (bytes/s) at a
    request size and queue depth, for a random or sequential pattern."""

    metric: str
    block: int
    queue_depth: float
    value: float
    sequential: bool
    source: str
    label: str = ""

    def predicted(self, model) -> float:
        if self.metric == "iops":
            return model.iops(self.block, self.queue_depth, sequential=self.sequential)
        return model.bandwidth(self.block, self.queue_depth, sequential=self.sequential)


@dataclass(frozen=True, kw_only=True)
class Profile:
    """What every profile holds beside its figures: its name and description, the file it was read
    from and where each value comes from (keyword-only: each kind's own fields come first)."""

    name: str
    description: str = ""
    path: str = ""
    provenance: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    kind: ClassVar[str]


class PartSpec(Profile):
    """A flash, DRAM or compute part: a profile that configures one device model."""

    def model(self):
        """This part's timing model (``simulator.devices``: FlashModel, DramModel or ComputeModel)."""
        from .. import devices

        return {"flash": devices.FlashModel, "dram": devices.DramModel, "compute": devices.ComputeModel}[
            self.kind].from_spec(self)


@dataclass(frozen=True)
class FlashSpec(PartSpec):
    latency: float
    unit_bandwidth: float
    units: float
    queue_depth: float
    link_bandwidth: float
    page_bytes: int
    max_request_bytes: float
    random_penalty: float = 0.0
    host_overhead: float = 0.0
    read_energy_per_byte: float | None = None
    cited: tuple[CitedFigure, ...] = ()

    kind = "flash"


@dataclass(frozen=True)
class DramSpec(PartSpec):
    bandwidth: float
    latency: float
    efficiency: float = 1.0
    read_energy_per_byte: float | None = None

    kind = "dram"


@dataclass(frozen=True)
class ComputeSpec(PartSpec):
    fp16_flops: float
    int8_ops: float | None = None
    efficiency: float = 1.0

    kind = "compute"


@dataclass(frozen=True)
class Device(Profile):
    flash: FlashSpec
    dram: DramSpec
    dram_capacity: int
    usable_dram_fraction: float = 1.0
    runtime_reserve: int = 0             # bytes the inference runtime keeps for itself (buffers, code)
    miss_via_dram: bool = True           # the engine's default: landed misses pass through DRAM
    prefetch: bool = True                # the engine's default: token-independent columns are read ahead
    compute: ComputeSpec | None = None

    kind = "device"

    @property
    def usable_dram_bytes(self) -> int:
        """DRAM the model may use: capacity x usable_dram_fraction (floored to bytes)."""
        return int(math.floor(self.dram_capacity * self.usable_dram_fraction))

    def flash_model(self):
        return self.flash.model()

    def dram_model(self):
        return self.dram.model()

    def compute_model(self):
        return None if self.compute is None else self.compute.model()


SPEC_CLASSES = {"flash": FlashSpec, "dram": DramSpec, "compute": ComputeSpec}
