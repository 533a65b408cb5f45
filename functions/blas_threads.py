"""One OpenBLAS thread in a process that does image work (prepare): its threads would otherwise spin beside it."""


def one_blas_thread() -> bool:
    """Limit the BLAS libraries loaded (OpenCV's and numpy's OpenBLAS) to one thread each. True if any was found.

    OpenCV's `gemm` (the keyer's backdrop fit) and numpy's linear algebra run on OpenBLAS. After each call its worker
    threads keep spinning for a while, so one keyer call kept a second core busy: on 600x800 photos the keyer took
    twice its wall time in CPU (3.35 s for 1.69 s over ten photos; 1.61 s for 1.61 s with one thread), CPU that
    `catalog run`'s other workers and prepare's own encoding threads need. The products are small (a few tens of
    thousands of rows by ten), so one thread loses nothing. Imports OpenCV and numpy first: threadpoolctl changes only
    the libraries already loaded.
    """
    import cv2  # noqa: F401  (loads OpenCV's OpenBLAS)
    import numpy  # noqa: F401  (loads numpy's)
    from threadpoolctl import threadpool_info, threadpool_limits

    if not any(library["user_api"] == "blas" for library in threadpool_info()):
        return False
    threadpool_limits(limits=1, user_api="blas")  # called, not entered: the limit stays for the process
    return True
