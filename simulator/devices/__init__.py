"""Device models the engine calls: flash (latency, parallel units, shared link, pages), DRAM, compute,
and the DIP paper's analytic bytes/bandwidth model.

    from simulator.hardware import load_device
    dev = load_device("phone-8gb-ufs40")
    flash = dev.flash.model()                  # FlashModel
    reqs = flash.requests(starts, ends)        # page-aligned, coalesced, split
    t = flash.batch_time(reqs.sizes)           # seconds for the batch
"""
from .analytic import analytic_bandwidths, token_energy, token_time, token_time_breakdown
from .compute import ComputeModel
from .dram import DramModel
from .flash import FlashModel
from .requests import Requests, extents_to_requests, page_round, sequential_mask, size_histogram

__all__ = ["FlashModel", "DramModel", "ComputeModel", "Requests", "extents_to_requests", "page_round",
           "sequential_mask", "size_histogram", "analytic_bandwidths", "token_time", "token_time_breakdown",
           "token_energy"]
