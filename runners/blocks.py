"""Working on a kernel matrix one block of rows at a time, on one thread: what every kernel
(``kernels.py``, ``cnn_kernels.py``) and the gp runner share.

A kernel matrix is the largest object of a gp run (n_train^2 float64). Each kernel makes it with
one multithreaded call (a GEMM, or ``cdist``) and then transforms it in place one block of rows
at a time, every temporary the size of a block (2 MiB on a CPU, so that the kernel's several
elementwise passes run in cache). Those passes run on one thread: they are cheap next to the
GEMM, and on a CPU shared with other work every parallel region ends in a barrier whose waiting
thread spins, so splitting them across threads mostly buys spinning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

# Elements per block of rows: 2^18 float64 = 2 MiB, one core's L2 cache on the machines we
# measure; a GPU wants far larger launches, so it gets blocks of 2^24 elements (128 MiB).
CPU_BLOCK_ELEMENTS = 1 << 18
DEVICE_BLOCK_ELEMENTS = 1 << 24


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU operations inside on one thread (and restore the count after).

    For memory-bound elementwise passes: their second thread saves little wall time, and every
    parallel region costs a barrier at which a thread spins, which on a shared machine (whose
    other thread may be descheduled) inflates CPU time several fold. GEMMs stay parallel.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def row_blocks(n_rows: int, n_cols: int, device: torch.device) -> Iterator[slice]:
    """Slices of consecutive rows of an (n_rows, n_cols) matrix, about one block each."""
    per_block = CPU_BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    rows = max(1, per_block // max(1, n_cols))
    for start in range(0, n_rows, rows):
        yield slice(start, min(start + rows, n_rows))


def in_blocks(matrix: torch.Tensor, transform: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """Apply ``transform`` in place to each block of rows of ``matrix``, on one thread."""
    with one_thread():
        for rows in row_blocks(*matrix.shape, matrix.device):
            transform(matrix[rows])  # a row slice of a contiguous matrix is contiguous
    return matrix
