/* pymon_launch: the compiled launcher, what podman/CRI-O execute as their conmon.
 *
 * A Python launcher costs ~10 ms before it does anything; conmon starts in ~2 ms. This
 * program hands the invocation (argv, environment, cwd, umask, fds, rlimits,
 * oom_score_adj, nice, signal state, pid) to a warm `pymon-server` over a unix
 * SOCK_SEQPACKET socket and lets the monitor the server forks do the work. When no server
 * takes it within 2 ms (or one refuses it) it execs the cold path: the Python interpreter
 * running pymon.launcher.main, with the environment and fds exactly as they were given.
 *
 * The wire format and the conversation are specified in pymon/handover.py; the request
 * built here must be byte-for-byte what handover.encode_request produces (the unit tests
 * compare them). The server validates it with pymon/server/wire.py.
 *
 * Built by pymon/launcher/build.py, which defines:
 *   PYTHON         the interpreter of the cold path (also its argv[0]: Python derives its
 *                  prefix from it)
 *   BOOTSTRAP      the -c program of the cold path (the entry point script's lines)
 *   PYMON_VERSION  pymon's version, sent in the request
 *
 * PYMON_SERVER_BUDGET_MS in the environment changes the 2 ms budget, as it does for the
 * Python launcher (pymon/launcher/client.py): tests on a loaded machine.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef PYTHON
#error "PYTHON must be defined (the cold path's interpreter)"
#endif
#ifndef BOOTSTRAP
#error "BOOTSTRAP must be defined (the cold path's -c program)"
#endif
#ifndef PYMON_VERSION
#error "PYMON_VERSION must be defined"
#endif
#define BUDGET_US 2000 /* the budget for deciding warm or cold, from connect */

/* pymon/handover.py */
#define PROTOCOL 2
#define MAX_FDS 250
#define MAX_REQUEST 200000
#define MAX_REPLY 4096
#define RLIMIT_COUNT 16 /* Linux's RLIM_NLIMITS; the server accepts 0..15 */

extern char **environ;

/* ---- start-up state ------------------------------------------------------------------ */

static int fds[MAX_FDS];
static int nfds;

/* The fds open at exec, ascending: what the engine passed (0, 1, 2 included). Read with
 * getdents64 on a static buffer so nothing is allocated; the directory's own fd is left
 * out. Returns -1 on failure or when there are more than MAX_FDS (SCM_RIGHTS cannot carry
 * them: the cold path handles any number). */
static int list_fds(void)
{
    static char buf[8192];
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    int too_many = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dir, buf, sizeof buf);
        if (n < 0) {
            close(dir);
            return -1;
        }
        if (n == 0)
            break;
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name */
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char *name = buf + off + 19;
            off += reclen;
            if (name[0] < '0' || name[0] > '9')
                continue; /* "." and ".." */
            int fd = atoi(name);
            if (fd == dir)
                continue;
            if (nfds == MAX_FDS) {
                too_many = 1;
                continue;
            }
            /* insertion sort: /proc lists in order already, so this is linear */
            int i = nfds++;
            while (i > 0 && fds[i - 1] > fd) {
                fds[i] = fds[i - 1];
                i--;
            }
            fds[i] = fd;
        }
    }
    close(dir);
    return too_many ? -1 : 0;
}

/* Reads a small /proc file into buf (NUL-terminated); -1 on failure. */
static int read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < size - 1) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return 0;
}

static int status_mask(const char *status, const char *key, uint64_t *mask)
{
    const char *p = strstr(status, key);
    if (p == NULL)
        return -1;
    char *end;
    errno = 0;
    *mask = strtoull(p + strlen(key), &end, 16);
    return errno || end == p + strlen(key) ? -1 : 0;
}

/* ---- MessagePack, the subset of handover.py ------------------------------------------ */

static unsigned char req[MAX_REQUEST];
static size_t req_len;
static int req_overflow; /* set once: the request would exceed MAX_REQUEST */

static unsigned char *put(size_t n)
{
    if (req_overflow || n > MAX_REQUEST - req_len) {
        req_overflow = 1;
        return NULL;
    }
    unsigned char *p = req + req_len;
    req_len += n;
    return p;
}

static void put_be(unsigned char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* handover._int: positive fixint, negative fixint, else int64 (0xd3) */
static void put_int(int64_t n)
{
    unsigned char *p;
    if (n >= -32 && n < 0x80) {
        if ((p = put(1)))
            p[0] = (unsigned char)(n & 0xff);
    } else if ((p = put(9))) {
        p[0] = 0xd3;
        put_be(p + 1, (uint64_t)n, 8);
    }
}

/* array32, str32, bin32: the fixed 4-byte lengths handover.py always writes */
static void put_head(unsigned char marker, size_t len)
{
    unsigned char *p = put(5);
    if (p) {
        p[0] = marker;
        put_be(p + 1, len, 4);
    }
}

static void put_bytes(unsigned char marker, const char *data, size_t len)
{
    put_head(marker, len);
    unsigned char *p = put(len);
    if (p)
        memcpy(p, data, len);
}

#define put_array(n) put_head(0xdd, (n))
#define put_bin(s) put_bytes(0xc6, (s), strlen(s))
#define put_str(s) put_bytes(0xdb, (s), strlen(s))

static void put_strings(char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    put_array(n);
    for (size_t i = 0; i < n; i++)
        put_bin(list[i]);
}

/* A reply: [kind, value, text]. Mirrors handover.decode_reply: any marker it accepts is
 * accepted here; anything else (or trailing bytes) is malformed. Strings point into buf. */
struct reply {
    const char *kind;
    size_t kind_len;
    int64_t value;
    const char *text;
    size_t text_len;
};

static int take(const unsigned char *buf, size_t len, size_t *pos, size_t n, uint64_t *out)
{
    if (n > len - *pos)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | buf[*pos + i];
    *pos += n;
    *out = v;
    return 0;
}

static int take_str(const unsigned char *buf, size_t len, size_t *pos, const char **s,
                    size_t *slen)
{
    uint64_t m, n;
    if (take(buf, len, pos, 1, &m))
        return -1;
    if (m >= 0xa0 && m < 0xc0)
        n = m - 0xa0;
    else if (m >= 0xd9 && m <= 0xdb) {
        if (take(buf, len, pos, 1u << (m - 0xd9), &n))
            return -1;
    } else
        return -1;
    if (n > len - *pos)
        return -1;
    *s = (const char *)buf + *pos;
    *slen = n;
    *pos += n;
    return 0;
}

static int decode_reply(const unsigned char *buf, size_t len, struct reply *r)
{
    size_t pos = 0;
    uint64_t m, n;
    if (take(buf, len, &pos, 1, &m))
        return -1;
    if (m >= 0x90 && m < 0xa0)
        n = m - 0x90;
    else if (m == 0xdc || m == 0xdd) {
        if (take(buf, len, &pos, m == 0xdc ? 2 : 4, &n))
            return -1;
    } else
        return -1;
    if (n != 3 || take_str(buf, len, &pos, &r->kind, &r->kind_len) ||
        take(buf, len, &pos, 1, &m))
        return -1;
    if (m < 0x80)
        r->value = (int64_t)m;
    else if (m >= 0xe0)
        r->value = (int64_t)m - 0x100;
    else if (m >= 0xd0 && m <= 0xd3) {
        unsigned width = 1u << (m - 0xd0);
        if (take(buf, len, &pos, width, &n))
            return -1;
        if (width < 8 && n >> (8 * width - 1)) /* sign-extend */
            n |= ~UINT64_C(0) << (8 * width);
        r->value = (int64_t)n;
    } else if (m >= 0xcc && m <= 0xcf) {
        if (take(buf, len, &pos, 1u << (m - 0xcc), &n) || n > INT64_MAX)
            return -1;
        r->value = (int64_t)n;
    } else
        return -1;
    if (take_str(buf, len, &pos, &r->text, &r->text_len))
        return -1;
    return pos == len ? 0 : -1;
}

static int is_kind(const struct reply *r, const char *kind)
{
    return r->kind_len == strlen(kind) && memcmp(r->kind, kind, r->kind_len) == 0;
}

/* A pid we may signal: kill(0) or kill(-1) (or a value that wraps to them as pid_t)
 * would hit our process group or every process. */
static int is_pid(int64_t value)
{
    return value > 0 && value <= INT_MAX;
}

/* ---- the cold path -------------------------------------------------------------------- */

static int debug_logging(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *level = NULL;
        if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc)
            level = argv[i + 1];
        else if (strncmp(argv[i], "--log-level=", 12) == 0)
            level = argv[i] + 12;
        if (level && (strcmp(level, "debug") == 0 || strcmp(level, "trace") == 0))
            return 1;
    }
    return 0;
}

/* Everything this program opened is closed (or CLOEXEC) and nothing else was changed, so
 * the interpreter starts in the process podman executed. */
static __attribute__((noreturn)) void run_cold(int argc, char **argv, const char *reason)
{
    if (argc < 1) /* an empty argv: nothing to pass on */
        argc = 1;
    if (debug_logging(argc, argv))
        dprintf(2, "[conmon:d]: warm monitor unavailable (%s), running cold\n", reason);
    char **args = malloc(((size_t)argc + 4) * sizeof *args);
    if (args) {
        args[0] = PYTHON;
        args[1] = "-IS";
        args[2] = "-c";
        args[3] = BOOTSTRAP;
        for (int i = 1; i < argc; i++)
            args[i + 3] = argv[i];
        args[argc + 3] = NULL;
        execv(PYTHON, args);
    }
    dprintf(2, "[conmon:e]: cannot run %s: %s\n", PYTHON, strerror(errno));
    exit(1);
}

/* ---- the warm path --------------------------------------------------------------------- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t budget_us(void)
{
    const char *text = getenv("PYMON_SERVER_BUDGET_MS");
    if (text == NULL)
        return BUDGET_US;
    char *end;
    double ms = strtod(text, &end);
    if (end == text || ms != ms) /* not a number (or NaN): the default, like client.py */
        return BUDGET_US;
    if (ms > 1e9)
        ms = 1e9;
    return (int64_t)(ms * 1000);
}

/* Where the server listens: handover.default_socket_path. NULL: no server. */
static const char *socket_path(char *buf, size_t size)
{
    const char *path = getenv("PYMON_SOCKET");
    if (path)
        return *path ? path : NULL;
    if (geteuid() == 0)
        return "/run/pymon/server.sock";
    const char *dir = getenv("XDG_RUNTIME_DIR");
    if (dir == NULL || *dir == '\0')
        return NULL;
    /* os.path.join: no second slash after a trailing one */
    size_t len = strlen(dir);
    const char *sep = dir[len - 1] == '/' ? "" : "/";
    if ((size_t)snprintf(buf, size, "%s%spymon/server.sock", dir, sep) >= size)
        return NULL;
    return buf;
}

/* Builds the request in `req`, in handover.encode_request's field order. Returns a reason
 * to go cold, or NULL. */
static const char *build_request(char **argv)
{
    static char status[8192], number[32], cwd[PATH_MAX];
    uint64_t blocked, ignored;
    if (read_small("/proc/self/status", status, sizeof status) ||
        status_mask(status, "\nSigBlk:", &blocked) || status_mask(status, "\nSigIgn:", &ignored))
        return "cannot read the signal state";
    if (read_small("/proc/self/oom_score_adj", number, sizeof number))
        return "cannot read oom_score_adj";
    long oom_score_adj = strtol(number, NULL, 10);
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (nice == -1 && errno)
        return "cannot read the nice value";
    mode_t mask = umask(0);
    umask(mask);
    if (getcwd(cwd, sizeof cwd) == NULL || cwd[0] != '/')
        return "cannot read the working directory";

    put_array(13);
    put_int(PROTOCOL);
    put_str(PYMON_VERSION);
    put_int(getpid());
    put_strings(argv);
    put_strings(environ);
    put_bin(cwd);
    put_int(mask);
    put_array((size_t)nfds);
    for (int i = 0; i < nfds; i++)
        put_int(fds[i]);
    put_array(RLIMIT_COUNT);
    for (int r = 0; r < RLIMIT_COUNT; r++) {
        struct rlimit lim;
        if (getrlimit(r, &lim))
            return "cannot read the resource limits";
        put_array(3);
        put_int(r);
        put_int(lim.rlim_cur == RLIM_INFINITY ? -1 : (int64_t)lim.rlim_cur);
        put_int(lim.rlim_max == RLIM_INFINITY ? -1 : (int64_t)lim.rlim_max);
    }
    put_int(oom_score_adj);
    /* 64-bit masks travel as signed int64, as handover._signed64 sends them */
    put_int((int64_t)blocked);
    put_int((int64_t)ignored);
    put_int(nice);
    return req_overflow ? "request too large" : NULL;
}

static int send_request(int sock, int token)
{
    static union {
        char buf[CMSG_SPACE(sizeof(int) * (MAX_FDS + 1))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = req, .iov_len = req_len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)(nfds + 1));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)(nfds + 1));
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c) + sizeof(int) * (size_t)nfds, &token, sizeof token); /* last */
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)req_len ? 0 : -1;
}

/* Receives one reply. 1: got one; 0: EOF; -1: error or malformed. */
static int recv_reply(int sock, struct reply *r)
{
    static unsigned char buf[MAX_REPLY + 1];
    ssize_t n;
    do
        n = recv(sock, buf, sizeof buf, MSG_TRUNC);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return 0;
    if (n < 0 || (size_t)n > MAX_REPLY || decode_reply(buf, (size_t)n, r))
        return -1;
    return 1;
}

/* handover.decode_reply's text decoding is lenient; a pidfile name must be a C string */
static const char *reply_text(const struct reply *r)
{
    static char text[MAX_REPLY + 1];
    if (memchr(r->text, '\0', r->text_len))
        return NULL;
    memcpy(text, r->text, r->text_len);
    text[r->text_len] = '\0';
    return text;
}

/* exitfile.write_atomic: path.<pid hex><attempt>, O_EXCL, 0666 & ~umask, then rename, so
 * podman never reads a partial pid. Returns an errno value, 0 on success. */
static int write_pidfile(const char *path, int64_t pid)
{
    char tmp[PATH_MAX + 32], text[24];
    int len = snprintf(text, sizeof text, "%" PRId64, pid);
    for (int attempt = 0; attempt < 100; attempt++) {
        if ((size_t)snprintf(tmp, sizeof tmp, "%s.%x%d", path, (unsigned)getpid(), attempt) >=
            sizeof tmp)
            return ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return errno;
        int err = 0;
        for (int off = 0; off < len && !err;) {
            ssize_t n = write(fd, text + off, (size_t)(len - off));
            if (n < 0 && errno != EINTR)
                err = errno;
            else if (n > 0)
                off += (int)n;
        }
        if (close(fd) && !err && errno != EINTR)
            err = errno;
        if (!err && rename(tmp, path))
            err = errno;
        if (err)
            unlink(tmp);
        return err;
    }
    return EEXIST;
}

static __attribute__((noreturn)) void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dprintf(2, "[conmon:e]: ");
    vdprintf(2, fmt, ap);
    dprintf(2, "\n");
    va_end(ap);
    exit(1);
}

/* "monitor PID", or "the monitor" while its pid is not known (it comes with "detached" or
 * "running") */
static const char *who(int64_t pid)
{
    static char buf[40];
    if (pid <= 0)
        return "the monitor";
    snprintf(buf, sizeof buf, "monitor %" PRId64, pid);
    return buf;
}

/* Once the server has taken the token: the monitor owns the invocation, and this process
 * only reports its outcome. Returns only if the server refuses after all (a check after
 * the token, or its fork, failed: no monitor exists), with the reason, for the cold path. */
static const char *committed(int sock, int sfd)
{
    static char why[MAX_REPLY + 32];
    int64_t running = 0; /* the monitor's pid once it said "running" */
    /* no exec follows any more (but the cold path's, after a refusal: it gets the
     * disposition back): a closed stderr must not turn an exit status into a death by
     * SIGPIPE */
    struct sigaction ignore = {.sa_handler = SIG_IGN}, pipe_was;
    sigaction(SIGPIPE, &ignore, &pipe_was);
    struct pollfd pfd[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    for (;;) {
        /* signals are read only while running: before that there is no one to forward
         * them to, and they stay queued in the signalfd */
        if (poll(pfd, running ? 2 : 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            fail("poll: %s", strerror(errno));
        }
        if (running && pfd[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si)
                kill((pid_t)running, (int)si.ssi_signo);
        }
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        struct reply r;
        int got = recv_reply(sock, &r);
        if (got == 0 && running)
            fail("%s ended without reporting an exit status", who(running));
        if (got == 0)
            fail("%s ended before reporting its state", who(0));
        if (got < 0)
            fail("malformed reply from %s", who(running));
        if (!running && is_kind(&r, "refused")) {
            snprintf(why, sizeof why, "refused: %.*s", (int)(r.text_len > 80 ? 80 : r.text_len),
                     r.text);
            sigaction(SIGPIPE, &pipe_was, NULL);
            return why;
        }
        if (is_kind(&r, "exited"))
            exit((int)r.value);
        if (!running && is_kind(&r, "detached") && is_pid(r.value)) {
            const char *pidfile = reply_text(&r);
            int err = pidfile && *pidfile ? write_pidfile(pidfile, r.value) : 0;
            if (pidfile == NULL)
                err = EINVAL;
            if (err) {
                kill((pid_t)r.value, SIGKILL);
                fail("Failed to write conmon pidfile: %s", strerror(err));
            }
            exit(0);
        }
        if (!running && is_kind(&r, "running") && is_pid(r.value)) {
            running = r.value;
            continue;
        }
        fail("unexpected reply \"%.*s\" from %s", (int)r.kind_len, r.kind, who(running));
    }
}

/* The signal mask, by the system call: musl's sigprocmask leaves the signals it reserves
 * (32-34) out of the old mask it reports, so restoring that mask would unblock them for
 * the cold monitor where the engine had them blocked. */
static int mask(int how, const sigset_t *set, sigset_t *old)
{
    return (int)syscall(SYS_rt_sigprocmask, how, set, old, (size_t)(_NSIG / 8));
}

/* Which signals --sync forwards to the monitor (conmon's parent forwards these). */
static void forwarded(sigset_t *set)
{
    static const int sigs[] = {SIGTERM, SIGINT,  SIGQUIT,  SIGHUP, SIGUSR1,
                               SIGUSR2, SIGALRM, SIGWINCH, SIGCONT};
    sigemptyset(set);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(set, sigs[i]);
}

int main(int argc, char **argv)
{
    /* first, before this program opens anything: the fds the engine passed */
    if (list_fds())
        run_cold(argc, argv, "cannot hand over the fds");
    static char pathbuf[PATH_MAX];
    const char *path = socket_path(pathbuf, sizeof pathbuf);
    if (path == NULL)
        run_cold(argc, argv, "no server socket configured");
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t path_len = strlen(path);
    if (path_len > sizeof addr.sun_path) /* not NUL-terminated when full, like Python */
        run_cold(argc, argv, "socket path too long");
    memcpy(addr.sun_path, path, path_len);
    const char *reason = build_request(argv);
    if (reason)
        run_cold(argc, argv, reason);

    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0)
        run_cold(argc, argv, "cannot create a socket");
    int64_t budget = budget_us(), deadline = now_us() + budget;
    static char why[PATH_MAX + 128];
    /* a unix connect never waits: it succeeds, or fails (EAGAIN: backlog full) */
    socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);
    if (connect(sock, (struct sockaddr *)&addr, addr_len)) {
        snprintf(why, sizeof why, "%s: %s", path, strerror(errno));
        close(sock);
        run_cold(argc, argv, why);
    }
    /* The token: one byte in a pipe whose read end goes with the request. Whoever reads it
     * decides: the server, before it forks the monitor, or this process, when the budget
     * has run out, before it runs cold. */
    int token[2];
    if (pipe2(token, O_CLOEXEC | O_NONBLOCK) || write(token[1], "t", 1) != 1) {
        close(sock);
        run_cold(argc, argv, "cannot make the token");
    }
    close(token[1]);
    /* Queue the forwarded signals from now on: the monitor may start at any moment */
    sigset_t set, old;
    forwarded(&set);
    mask(SIG_BLOCK, &set, &old);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0 || send_request(sock, token[0])) {
        if (sfd >= 0)
            close(sfd);
        mask(SIG_SETMASK, &old, NULL);
        close(sock);
        close(token[0]);
        run_cold(argc, argv, "cannot send the request");
    }
    /* The first message, within the budget: the monitor's (the server took the token), or
     * "refused" (no monitor), which committed() hands back for the cold path. None by the
     * deadline (or an EOF, or a malformed message): the token decides. */
    for (;;) {
        struct pollfd pfd = {.fd = sock, .events = POLLIN};
        int64_t left = deadline - now_us();
        if (left < 0) /* still look once: the message may be there already */
            left = 0;
        struct timespec ts = {left / 1000000, left % 1000000 * 1000};
        int n = ppoll(&pfd, 1, &ts, NULL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, sizeof why, "no answer within %g ms", (double)budget / 1000);
            reason = why;
            break;
        }
        static unsigned char peek[MAX_REPLY + 1];
        struct reply r;
        ssize_t got;
        do /* peeked: committed() reads it */
            got = recv(sock, peek, sizeof peek, MSG_PEEK | MSG_TRUNC);
        while (got < 0 && errno == EINTR);
        if (got > 0 && (size_t)got <= MAX_REPLY && !decode_reply(peek, (size_t)got, &r)) {
            reason = committed(sock, sfd);
            goto cold;
        }
        reason = got == 0 ? "the server closed the connection" : "malformed reply";
        break;
    }
    char byte;
    if (read(token[0], &byte, 1) != 1) /* gone: the server took it, a monitor is coming */
        reason = committed(sock, sfd);
cold:
    close(token[0]);
    close(sfd);
    mask(SIG_SETMASK, &old, NULL);
    close(sock);
    run_cold(argc, argv, reason);
}
