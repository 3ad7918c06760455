"""cffi build script for pymon._native._pymon_native (compiled at install time).

Only what the standard library lacks lives here. Python 3.11 already has os.splice,
os.eventfd, os.pidfd_open, os.writev, socket.recv_fds and fcntl.F_SETPIPE_SZ, so those are
used from the stdlib; prctl has no stdlib binding (ctypes would work but costs an import on
the start-up path and gives no errno handling we trust). inotify is here too: pyroute2 has
a wrapper, but importing it costs ~130 ms (pyroute2/__init__ loads all of pyroute2) and it
is built around a blocking poll and a thread, where we need only the fd for trio.
madvise: the stdlib has it only for mmap objects, and the server marks its own heap.

pymon_spawn starts the runtime (and the exit command) with vfork: a monitor is a Python
process of ~20 MiB resident, and os.fork copies its page tables (0.3-0.6 ms here), makes
the monitor fault again on every page it writes next, and has the child unmap it all at
exec. subprocess and os.posix_spawn use vfork too, but cannot set PDEATHSIG, fchmod the
stdio pipes, write oom_score_adj or rewrite LISTEN_PID with the child's own pid, which the
contract asks for between fork and exec; those steps are done here, in C, with only
async-signal-safe calls (glibc's posix_spawn takes the same precautions).

fork: the server forks its monitors with the C library's fork, not os.fork, whose child
runs PyOS_AfterFork_Child and the hooks modules registered (threading's, random's, trio's
thread cache's). None of them applies to a server that has one thread, holds no lock and
whose child runs on in Python, and they copied ~160 pages of the child's before it did
anything (~0.4 ms of faults at ~2.3 us each here, on the way to the pid message; most of
those pages a monitor writes later anyway: ~20 fewer over its life, measured). cffi
releases the GIL around the call and the child takes it again on return, as the only
thread.

The snapshot functions copy the server's memory into a file and map it back, and give
back a monitor's copies that match it (pymon/server/snapshot.py says why); no library
offers either, and both must run without touching the memory they work on.
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

    #define MADV_MERGEABLE ...
    #define MADV_POPULATE_READ ...
    #define MADV_POPULATE_WRITE ...
    int madvise(void *addr, size_t length, int advice);

    int pymon_spawn(const char *path, char *const argv[], char *envp[], const int fds[3],
                    const char *oom_score_adj, const int stray[], int n_stray,
                    int listen_pid_slot, char *listen_pid_buf, int listen_pid_size,
                    int *stage, int *child_errno);

    int pymon_snapshot_region(unsigned long start, unsigned long end, int copy_all,
                              int memfd, unsigned long offset, int pagemap, long *copied);
    int pymon_snapshot_view(int memfd, unsigned long size);
    long pymon_give_back(const unsigned long *regions, int n, long *kept);
    int pymon_give_back_on_timer(const unsigned long *regions, int n, long first_ms,
                                 long last_ms);
    int pymon_give_back_signal(void);
    void pymon_give_back_stats(long out[3]);
    int fork(void);
    """
)
ffibuilder.set_source(
    "pymon._native._pymon_native",
    """
    #include <sys/prctl.h>
    #include <sys/inotify.h>
    #include <sys/stat.h>
    #include <sys/mman.h>
    #include <malloc.h>
    #include <errno.h>
    #include <fcntl.h>
    #include <signal.h>
    #include <string.h>
    #include <unistd.h>
    #include <stdint.h>
    #include <time.h>

    /* What failed in the child, for the parent's message (stage 0: exec itself). */
    enum { SPAWN_EXEC = 0, SPAWN_PDEATHSIG = 1, SPAWN_STDIO = 2 };

    /* The decimal digits of v at the end of buf[..size-1], NUL-terminated; returns where
       they start. */
    static char *pymon_utoa(unsigned long v, char *buf, int size) {
        char *p = buf + size - 1;
        *p = 0;
        do { *--p = (char)('0' + v % 10); v /= 10; } while (v && p > buf);
        return p;
    }

    /* vfork and exec `path`. In the child, in this order: PDEATHSIG=SIGKILL (and _exit(1)
       if the parent is already gone), default dispositions for every signal that has a
       handler (Python's C handler must never run in a child that shares our memory) and
       for `stray` (the signals we ignore), an empty mask, fds[i] at i (-1: keep ours at i)
       inheritable and fchmod 0777, oom_score_adj if given, LISTEN_PID=<own pid> into
       envp[listen_pid_slot] if >= 0, then execve. Every signal is blocked in the parent
       from before the vfork until it returns, so none is handled in between. Returns the
       child's pid (it has exec'd, or exited 127 with *stage and *child_errno set), or -1
       with errno if vfork failed. */
    int pymon_spawn(const char *path, char *const argv[], char *envp[], const int fds[3],
                    const char *oom_score_adj, const int stray[], int n_stray,
                    int listen_pid_slot, char *listen_pid_buf, int listen_pid_size,
                    int *stage, int *child_errno) {
        sigset_t all, old;
        pid_t parent = getpid();
        int saved;
        volatile int failed_stage = -1, failed_errno = 0;
        pid_t pid;

        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pid = vfork();
        if (pid == 0) {
            struct sigaction dfl, cur;
            sigset_t none;
            int i, sig;

            if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
                failed_stage = SPAWN_PDEATHSIG; failed_errno = errno; _exit(127);
            }
            if (getppid() != parent)
                _exit(1);
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            sigemptyset(&dfl.sa_mask);
            for (sig = 1; sig < _NSIG; sig++) {
                if (sigaction(sig, NULL, &cur) < 0)
                    continue;  /* SIGKILL/SIGSTOP and glibc's reserved ones */
                if (cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN)
                    sigaction(sig, &dfl, NULL);
            }
            for (i = 0; i < n_stray; i++)
                sigaction(stray[i], &dfl, NULL);
            sigemptyset(&none);
            pthread_sigmask(SIG_SETMASK, &none, NULL);
            for (i = 0; i < 3; i++) {
                if (fds[i] < 0)
                    continue;
                if (fds[i] != i ? dup2(fds[i], i) < 0 : fcntl(i, F_SETFD, 0) < 0) {
                    failed_stage = SPAWN_STDIO; failed_errno = errno; _exit(127);
                }
                /* a non-root container user may reopen /dev/stdout (conmon 2.1.8+) */
                if (fchmod(i, 0777) < 0 && errno != EINVAL && errno != EPERM && errno != EROFS) {
                    failed_stage = SPAWN_STDIO; failed_errno = errno; _exit(127);
                }
            }
            if (oom_score_adj != NULL) {
                int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
                if (fd >= 0) {
                    ssize_t ignored = write(fd, oom_score_adj, strlen(oom_score_adj));
                    (void)ignored;
                    close(fd);
                }
            }
            if (listen_pid_slot >= 0) {
                char *digits = pymon_utoa((unsigned long)getpid(), listen_pid_buf + 11,
                                          listen_pid_size - 11);
                memmove(listen_pid_buf + 11, digits, strlen(digits) + 1);
                memcpy(listen_pid_buf, "LISTEN_PID=", 11);
                envp[listen_pid_slot] = listen_pid_buf;
            }
            execve(path, argv, envp);
            failed_stage = SPAWN_EXEC;
            failed_errno = errno;
            _exit(127);
        }
        saved = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        *stage = failed_stage;
        *child_errno = failed_errno;
        errno = saved;
        return pid;
    }

    /* --- the server's snapshot (pymon/server/snapshot.py) ----------------------------- */

    #define PAGE 4096UL
    #define BATCH 512

    /* The snapshot read-only: what each page held when the server took it. */
    static const char *pymon_view;

    /* Copy [start, end) of our own memory into memfd at offset (every page if copy_all,
       else the pages pagemap says are present or swapped: an absent anonymous page reads
       as zeros, as a hole in the file does), then map the file there, MAP_PRIVATE, over
       the memory it was copied from. Nothing between the copy and the mmap writes to that
       memory: the caller's stack is not among the ranges and this code writes only its
       own stack. Returns 0, or -errno with the range untouched. */
    int pymon_snapshot_region(unsigned long start, unsigned long end, int copy_all,
                              int memfd, unsigned long offset, int pagemap, long *copied) {
        uint64_t e[BATCH];
        unsigned long p = start, run_start = 0;
        long n = 0;
        int in_run = 0;

        while (p < end) {
            size_t count = (end - p) / PAGE < BATCH ? (end - p) / PAGE : BATCH, k;
            if (!copy_all &&
                pread(pagemap, e, count * 8, (off_t)(p / PAGE * 8)) != (ssize_t)(count * 8))
                return errno ? -errno : -EIO;
            for (k = 0; k <= count; k++) {
                /* runs of pages to copy, written with one pwrite each */
                int want = k < count && (copy_all || (e[k] >> 62 & 3));
                unsigned long at = p + k * PAGE;
                if (want && !in_run) {
                    run_start = at;
                    in_run = 1;
                } else if (!want && in_run) {
                    size_t len = at - run_start;
                    if (pwrite(memfd, (const void *)run_start, len,
                               (off_t)(offset + (run_start - start))) != (ssize_t)len)
                        return errno ? -errno : -EIO;
                    n += (long)(len / PAGE);
                    in_run = 0;
                }
            }
            p += count * PAGE;
        }
        if (mmap((void *)start, end - start, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                 memfd, (off_t)offset) == MAP_FAILED)
            return -errno;
        *copied = n;
        return 0;
    }

    int pymon_snapshot_view(int memfd, unsigned long size) {
        void *v = mmap(NULL, size, PROT_READ, MAP_SHARED, memfd, 0);
        if (v == MAP_FAILED)
            return -errno;
        pymon_view = v;
        return 0;
    }

    /* Drop the private copies [start, end) and map the snapshot's pages there again at
       once, read-only (MADV_POPULATE_READ, Linux 5.14+): a later read finds them mapped,
       and only a write faults (one copy-on-write fault, as before the pass). Without it
       every first access faulted, reads too: after a pass a container's exit took ~180
       more faults on the way to its exit file. An older kernel leaves them unmapped. */
    static int pymon_drop_run(unsigned long start, unsigned long end) {
        if (madvise((void *)start, end - start, MADV_DONTNEED) < 0)
            return -1;
        (void)madvise((void *)start, end - start, MADV_POPULATE_READ);
        return 0;
    }

    /* Give back every private copy of a snapshot page that holds what the snapshot holds:
       MADV_DONTNEED drops the copy, and the snapshot's page is mapped there again.
       regions: n triples (start, end, offset in the snapshot). Returns the pages given
       back (and *kept: the private copies that differ), or -errno. Equal neighbours are
       dropped together: nothing writes to them between the comparison and the drop (the
       monitor has one thread, and this runs in its signal handler or instead of it). */
    long pymon_give_back(const unsigned long *regions, int n, long *kept) {
        uint64_t e[BATCH];
        long dropped = 0, seen = 0;
        int i, pm;

        if (pymon_view == NULL)
            return -ENOENT;
        pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (pm < 0)
            return -errno;
        for (i = 0; i < n; i++) {
            unsigned long start = regions[3 * i], end = regions[3 * i + 1];
            unsigned long offset = regions[3 * i + 2], p = start, run = 0;
            while (p < end) {
                size_t count = (end - p) / PAGE < BATCH ? (end - p) / PAGE : BATCH, k;
                if (pread(pm, e, count * 8, (off_t)(p / PAGE * 8)) != (ssize_t)(count * 8)) {
                    int err = errno ? errno : EIO;
                    close(pm);
                    return -err;
                }
                for (k = 0; k < count; k++, p += PAGE) {
                    /* present, and an anonymous copy (not the file's page: bit 61) */
                    int copy = (e[k] >> 63 & 1) && !(e[k] >> 61 & 1);
                    int equal = copy && memcmp(pymon_view + offset + (p - start),
                                               (const void *)p, PAGE) == 0;
                    seen += copy;
                    if (equal && !run)
                        run = p;
                    else if (!equal && run) {
                        if (pymon_drop_run(run, p) == 0)
                            dropped += (long)((p - run) / PAGE);
                        run = 0;
                    }
                }
            }
            if (run && pymon_drop_run(run, end) == 0)
                dropped += (long)((end - run) / PAGE);
        }
        close(pm);
        *kept = seen - dropped;
        return dropped;
    }

    /* Giving back from a timer's signal handler, so that no Python runs for it: the
       monitor sleeps in epoll_wait when the signal comes (mostly), which is when its pages
       hold what they hold at rest, and the handler returns into the C library's wait,
       which Python retries without running any of its own code (PEP 475). A pass run from
       Python instead found ~80 pages again at the next pass, copied by the Python around
       the previous one. Everything the handler calls is a system call or memcmp; the
       signal is blocked while it runs, and in pymon_spawn's parent and child. */
    static timer_t pymon_gb_timer;
    static const unsigned long *pymon_gb_regions;
    static int pymon_gb_n;
    static long pymon_gb_delay_ms, pymon_gb_last_ms;
    static volatile long pymon_gb_passes, pymon_gb_given, pymon_gb_kept;

    int pymon_give_back_signal(void) {
        return SIGRTMIN + 8;
    }

    static void pymon_gb_arm(long ms) {
        struct itimerspec its;
        memset(&its, 0, sizeof its);
        its.it_value.tv_sec = ms / 1000;
        its.it_value.tv_nsec = ms % 1000 * 1000000L;
        timer_settime(pymon_gb_timer, 0, &its, NULL);
    }

    static void pymon_gb_handler(int sig) {
        int saved = errno;
        long kept = 0, given = pymon_give_back(pymon_gb_regions, pymon_gb_n, &kept);
        (void)sig;
        if (given >= 0) {
            pymon_gb_passes++;
            pymon_gb_given += given;
            pymon_gb_kept = kept;
        }
        pymon_gb_delay_ms = pymon_gb_delay_ms * 10 < pymon_gb_last_ms
            ? pymon_gb_delay_ms * 10 : pymon_gb_last_ms;
        pymon_gb_arm(pymon_gb_delay_ms);
        errno = saved;
    }

    /* Give back after first_ms, then ten times further apart each time, up to every
       last_ms. regions must live as long as the process. Returns 0 or -errno. */
    int pymon_give_back_on_timer(const unsigned long *regions, int n, long first_ms,
                                 long last_ms) {
        struct sigaction sa;
        struct sigevent sev;

        pymon_gb_regions = regions;
        pymon_gb_n = n;
        pymon_gb_delay_ms = first_ms;
        pymon_gb_last_ms = last_ms;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = pymon_gb_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(pymon_give_back_signal(), &sa, NULL) < 0)
            return -errno;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_SIGNAL;
        sev.sigev_signo = pymon_give_back_signal();
        if (timer_create(CLOCK_MONOTONIC, &sev, &pymon_gb_timer) < 0)
            return -errno;
        pymon_gb_arm(first_ms);
        return 0;
    }

    /* passes, pages given back in all, copies kept at the last pass */
    void pymon_give_back_stats(long out[3]) {
        out[0] = pymon_gb_passes;
        out[1] = pymon_gb_given;
        out[2] = pymon_gb_kept;
    }

    """,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
