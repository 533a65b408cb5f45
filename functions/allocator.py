"""glibc malloc settings for a process that makes and drops image-sized arrays photo after photo (prepare)."""

import ctypes
import sys

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Buffers up to this size come from the heap and are reused; larger ones (a 24 MP photo's) are still mapped and
# returned at once. 32 MB is the largest value glibc accepts on 64-bit.
IMAGE_BUFFER_CEILING = 32 << 20
# Free memory at the top of the heap is given back to the kernel only beyond this much.
TRIM_THRESHOLD = 128 << 20


def keep_image_buffers() -> bool:
    """Have glibc keep freed image-sized buffers for the next photo. True if it took the settings.

    By default glibc gives a freed buffer back to the kernel once the heap's free top passes twice the size of the
    last large buffer freed, and the next photo faults the same pages back in, zeroed: on 600x800 photos that was
    ~50 ms of system time a photo, a sixth of the photo's CPU (measured with /usr/bin/time and os.times).
    Elsewhere (macOS, musl) this does nothing and says so.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, IMAGE_BUFFER_CEILING)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
