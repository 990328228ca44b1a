"""Hardware profiles: the YAML schema, loading by name or path, validation, and the listing.

Profiles live in ``hardware_profiles/{flash,dram,compute,devices}/<name>.yaml`` (or
``$DIPSIM_HARDWARE_PROFILES``); ``hardware_profiles/SOURCES.md`` says where every figure comes from.
A YAML path works wherever a name does. ``schema`` holds the fields and specs, ``load`` reads and
checks files, ``listing`` shows them.

    from simulator.hardware import load_part, load_device
    ufs = load_part("flash", "ufs-4.0")          # FlashSpec
    dev = load_device("phone-8gb-ufs40")         # Device: flash + dram + compute + capacities
    dev.flash.model().batch_time(sizes)

Values
    A field is a bare value or ``{value: ..., source: "..."}`` / ``{value: ..., assumed: "why"}``.
    A bare value is covered by the file's top-level ``source:``; without one it is an error, so
    every number in a profile says where it comes from. Quantities take a unit string ("50 us",
    "4 KiB", "5.7 GB/s"; the units are listed in ``common.units``) or a number in base units
    (bytes, bytes/s, seconds, J/byte, FLOP/s). ``unbounded`` (or YAML ``.inf``) is accepted by the
    flash fields that may be infinite.

Flash part (``hardware_profiles/flash/<name>.yaml``)::

    name: ufs-4.0
    description: ...
    source: "..."                         # covers bare values
    latency: {value: 50 us, assumed: "..."}
    unit_bandwidth: {value: 270 MB/s, assumed: "..."}
    units: {value: 16, assumed: "..."}
    queue_depth: {value: 32, source: "..."}
    link_bandwidth: {value: 5711 MB/s, source: "..."}
    page_bytes: 4 KiB
    max_request_bytes: 512 KiB
    random_penalty: 0 us                  # optional, default 0
    host_overhead: 0 us                   # optional, default 0: host submission time per request
    read_energy_per_byte: 0.42 nJ/B       # optional
    cited:                                # figures the part must reproduce (tests check 15%)
      source: "..."
      rand_4k_iops: 244140
      rand_4k_qd: 32
      seq_read: 4200 MB/s
      seq_block: 512 KiB
      seq_qd: 32
      also: [{iops | bandwidth: ..., block: ..., qd: ..., pattern: random | sequential, source: "..."}]

DRAM part: ``bandwidth`` (peak), ``latency``, optional ``efficiency`` (sustained share of the peak,
default 1) and ``read_energy_per_byte``. Compute part: ``fp16_flops`` (dense peak), optional
``int8_ops`` and ``efficiency`` (default 1).

Device (``hardware_profiles/devices/<name>.yaml``)::

    name: phone-8gb-ufs40
    source: "..."
    flash: ufs-4.0                        # a part name, a YAML path, or the part inline (a mapping)
    dram: lpddr5x-8533
    compute: phone-npu                    # optional; null for no compute term
    dram_capacity: 8 GiB
    usable_dram_fraction: {value: 0.5, assumed: "..."}   # share of DRAM the model may use; default 1
    runtime_reserve: {value: 512 MiB, assumed: "..."}     # the runtime's own buffers; default 0
    overrides:                            # optional: replace a few fields of the named parts
      dram: {bandwidth: {value: 59.6 GB/s, source: "..."}}

Every problem is a one-line :class:`DipsimError` naming the file, the field and what is allowed.
"""
from common.units import parse_quantity

from .listing import describe_profile, list_profiles, profiles_table
from .load import load_device, load_part, load_profile, names, profiles_dir
from .schema import KINDS, PART_KINDS, ComputeSpec, Device, DramSpec, FlashSpec

__all__ = ["KINDS", "PART_KINDS", "ComputeSpec", "Device", "DramSpec", "FlashSpec", "describe_profile", "list_profiles",
           "load_device", "load_part", "load_profile", "names", "parse_quantity", "profiles_dir", "profiles_table"]
