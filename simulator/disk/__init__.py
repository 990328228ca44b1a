"""Calibrate the flash model on this machine's storage, and validate the engine against real reads.

Reads are direct (``O_DIRECT``: no page cache) and issued by a :class:`Host` that keeps exactly
``Q`` requests outstanding, FIFO in issue order: Linux native AIO from one thread where available
(:mod:`simulator.disk.aio`; a few microseconds of host time per request), else ``Q`` threads each with
one ``preadv`` outstanding. Python threads cost tens of microseconds per wake-up on a 2-core
machine -- more than a 4 KiB read on a fast SSD -- and a thread per request made both the
calibration and the validation measure the host rather than the disk.

``calibrate`` reads a file at random page-aligned offsets, request sizes 4 KiB - 1 MiB and queue
depths 1 - 32, several passes over the grid in shuffled order keeping each point's median (a
shared disk drifts by tens of percent within seconds), and fits the flash model's parameters
(``latency``, ``unit_bandwidth``, ``link_bandwidth``, ``host_overhead`` -- the host's serial time
per request -- and ``units``) to the measured throughputs: for every unit count, Nelder-Mead on the
logarithms from several starts minimises the squared log error of ``FlashModel.bandwidth`` over
all points; the best unit count wins.

``validate`` replays a real configuration's miss stream, lays the MLP weights out in a file of the
same size (random bytes stand in for the weights), and for every stage issues its requests with
direct reads exactly as the engine assumes: in issue order, at most the profile's queue depth
outstanding, each slot refilled with the next request as soon as its read completes. It compares
the measured flash time per token with the engine's, in interleaved rounds (these machines' disks
are shared and noisy), and reports the median error and its spread over the rounds.
"""
from .calibrate import calibrate, fit_flash
from .reads import ALIGN, DEFAULT_DEPTHS, DEFAULT_SIZES, IO_BACKENDS, Host, Reader, data_file, measure_point, open_direct
from .validate import stage_requests, validate

__all__ = ["ALIGN", "DEFAULT_DEPTHS", "DEFAULT_SIZES", "IO_BACKENDS", "Host", "Reader", "calibrate", "data_file",
           "fit_flash", "measure_point", "open_direct", "stage_requests", "validate"]
