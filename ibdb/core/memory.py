"""Memory limits: refuse what cannot fit before allocating it.

Estimates of what a task, a plan or a chunk allocates are compared with the machine's physical
memory, so that an absurd size is a message that says what to lower, not a hang or a
MemoryError far from the cause.
"""

from __future__ import annotations

import os

from ibdb.core.errors import SpecError


def machine_memory_bytes() -> int:
    """The machine's physical memory in bytes (page size x physical pages); 0 where the OS
    does not say (then no size is refused for want of memory)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 0


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human number (binary units: 1 GiB = 2^30 bytes)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} EiB"  # (not reached)


def require_memory(needed: int, what: str, fix: str, *, error: type = SpecError) -> None:
    """Raise ``error`` when ``needed`` bytes (an estimate of what ``what`` allocates at once)
    exceed the machine's memory: the message gives the estimate, the machine's memory and
    ``fix``. Called before allocating, so that an absurd size is a message, not a hang or a
    MemoryError."""
    have = machine_memory_bytes()
    if have and needed > have:
        raise error(f"{what} needs about {format_bytes(needed)} of memory at once; this "
                    f"machine has {format_bytes(have)}. {fix}")
