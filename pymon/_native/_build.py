"""cffi build script for pymon._native._pymon_native (compiled at install time).

Only what the standard library lacks lives here. Python 3.11 already has os.splice,
os.eventfd, os.pidfd_open, os.writev, socket.recv_fds and fcntl.F_SETPIPE_SZ, so those are
used from the stdlib; prctl has no stdlib binding (ctypes would work but costs an import on
the start-up path and gives no errno handling we trust). inotify is here too: pyroute2 has
a wrapper, but importing it costs ~130 ms (pyroute2/__init__ loads all of pyroute2) and it
is built around a blocking poll and a thread, where we need only the fd for trio.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define PR_SET_PDEATHSIG ...
    #define PR_SET_CHILD_SUBREAPER ...
    #define PR_GET_CHILD_SUBREAPER ...
    int prctl(int option, unsigned long arg2, unsigned long arg3,
              unsigned long arg4, unsigned long arg5);

    #define M_TRIM_THRESHOLD ...
    #define M_MMAP_THRESHOLD ...
    int mallopt(int param, int value);

    #define IN_NONBLOCK ...
    #define IN_CLOEXEC ...
    int inotify_init1(int flags);
    int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
    int inotify_rm_watch(int fd, int wd);
    """
)
ffibuilder.set_source(
    "pymon._native._pymon_native",
    """
    #include <sys/prctl.h>
    #include <sys/inotify.h>
    #include <malloc.h>
    """,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
