#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>

#ifndef WORK_ITERATIONS
#define WORK_ITERATIONS 1400000
#endif
#define BUF_SIZE 8192

static const double bucket_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
#define NBUCKETS (sizeof(bucket_bounds) / sizeof(bucket_bounds[0]))

/* Metrics cover GET / only (the workload), so scraping /metrics does not count itself. */
static uint64_t requests_total, duration_sum_ns, inflight, bucket_counts[NBUCKETS];
static const char *vm_name = "vireo";
static double started_at;
static int listen_fd, epoll_fd;

/* arrival: when the kernel received the first bytes of the request now in buf
   (CLOCK_REALTIME seconds; 0 when unknown). */
struct conn { int fd; size_t len; double arrival; char buf[BUF_SIZE]; };

/* The dirtying load (POST /dirty). dirty_lock guards the buffer and its settings; the
   dirtier holds it while writing one chunk, so a new setting never frees memory in use. */
#define PAGE_SIZE 4096
#define DIRTY_CHUNK (1 << 20)
#define DIRTY_RESERVE_MIB 16
static pthread_mutex_t dirty_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dirty_wake = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t dirty_control = PTHREAD_MUTEX_INITIALIZER;  /* one change at a time */
static char *dirty_buf;
static size_t dirty_bytes;
static long dirty_mib, dirty_rate;  /* rate in MiB/s of pages written; 0: as fast as it can */
static uint64_t dirty_generation, pages_dirtied;
/* What the dirtier last wrote into each chunk (0: not yet). Before it writes a page again it
   checks that the page still holds that value: a page that does not lost a write — memory
   the hypervisor failed to carry over (a live migration that missed a dirty page). */
static uint64_t *chunk_seq;
static uint64_t lost_writes;
/* A few pages written after every chunk, far more often than any page of the load: the
   check also covers pages the vCPU keeps writing (as a kernel's busiest data), not only
   pages written once a pass. */
#define HOT_PAGES 8
static char *hot_pages;
static uint64_t hot_seq;

static double realtime_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A fixed amount of integer work the compiler cannot fold away. */
static uint64_t do_work(void) {
    volatile uint64_t sink;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (long i = 0; i < WORK_ITERATIONS; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    }
    sink = x;
    return sink;
}

static void sleep_seconds(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* Writes seq into the first word of each page of [p, p + bytes), counting the pages that did
   not hold expected (0: nothing written there yet, nothing to check). */
static uint64_t rewrite(char *p, size_t bytes, uint64_t expected, uint64_t seq) {
    uint64_t lost = 0;
    for (size_t o = 0; o < bytes; o += PAGE_SIZE) {
        volatile uint64_t *word = (volatile uint64_t *)(p + o);
        if (expected && *word != expected) lost++;
        *word = seq;
    }
    return lost;
}

/* Writes one word in every page of the buffer, chunk by chunk, forever. */
static void *dirtier(void *arg) {
    (void)arg;
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
    uint64_t seq = 0, generation = 0, done = 0;
    size_t offset = 0;
    double t0 = 0;
    for (;;) {
        pthread_mutex_lock(&dirty_lock);
        while (dirty_buf == NULL) pthread_cond_wait(&dirty_wake, &dirty_lock);
        if (generation != dirty_generation) {
            generation = dirty_generation;
            offset = 0; done = 0; t0 = now_seconds();
        }
        long rate = dirty_rate;
        size_t end = offset + DIRTY_CHUNK < dirty_bytes ? offset + DIRTY_CHUNK : dirty_bytes;
        seq++;
        uint64_t lost = rewrite(dirty_buf + offset, end - offset, chunk_seq[offset / DIRTY_CHUNK], seq);
        chunk_seq[offset / DIRTY_CHUNK] = seq;
        lost += rewrite(hot_pages, HOT_PAGES * PAGE_SIZE, hot_seq, seq);
        hot_seq = seq;
        if (lost) __atomic_add_fetch(&lost_writes, lost, __ATOMIC_RELAXED);
        size_t written = end - offset;
        offset = end >= dirty_bytes ? 0 : end;
        /* Counted under the lock: once a new setting holds it, no count of the old load is late. */
        __atomic_add_fetch(&pages_dirtied, written / PAGE_SIZE, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&dirty_lock);
        done += written;
        if (rate > 0) {
            double wait = t0 + (double)done / ((double)rate * 1048576.0) - now_seconds();
            if (wait > 0) sleep_seconds(wait);
            /* Far behind (the guest was paused): start the pacing over rather than burst. */
            if (wait < -0.1) { t0 = now_seconds(); done = 0; }
        }
    }
    return NULL;
}

static long mem_available_mib(void) {
    char line[128];
    long kib = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

/* Replaces the dirtying load (mib 0: none). Returns 0, or -1 with a message in error; a
   request the guest has no memory for leaves the current load as it is. */
static int set_dirty(long mib, long rate, char *error, size_t size) {
    int rc = 0;
    pthread_mutex_lock(&dirty_control);
    /* The current buffer is freed first, so it counts as available. */
    long available = mem_available_mib();
    if (available >= 0) available += dirty_mib;
    if (mib > 0 && available >= 0 && mib > available - DIRTY_RESERVE_MIB) {
        snprintf(error, size, "mib=%ld is too much: the guest has %ld MiB available and keeps %d MiB\n",
            mib, available, DIRTY_RESERVE_MIB);
        pthread_mutex_unlock(&dirty_control);
        return -1;
    }
    pthread_mutex_lock(&dirty_lock);
    char *old = dirty_buf;
    size_t old_bytes = dirty_bytes;
    dirty_buf = NULL; dirty_bytes = 0; dirty_mib = 0; dirty_rate = 0;
    free(chunk_seq);
    chunk_seq = NULL;
    hot_seq = 0;
    pthread_mutex_unlock(&dirty_lock);
    if (old) munmap(old, old_bytes);
    if (mib > 0) {
        size_t bytes = (size_t)mib << 20;
        char *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        uint64_t *seqs = calloc((bytes + DIRTY_CHUNK - 1) / DIRTY_CHUNK, sizeof *seqs);
        if (buf == MAP_FAILED || seqs == NULL) {
            snprintf(error, size, "cannot allocate %ld MiB: %s\n", mib, strerror(errno));
            if (buf != MAP_FAILED) munmap(buf, bytes);
            free(seqs);
            rc = -1;
        } else {
            pthread_mutex_lock(&dirty_lock);
            dirty_buf = buf; dirty_bytes = bytes; dirty_mib = mib; dirty_rate = rate;
            chunk_seq = seqs;
            dirty_generation++;
            pthread_cond_signal(&dirty_wake);
            pthread_mutex_unlock(&dirty_lock);
        }
    }
    pthread_mutex_unlock(&dirty_control);
    return rc;
}

/* The CPU burners (POST /burn): each spins on do_work until burn_generation moves on. */
#define BURN_MAX_THREADS 64
static pthread_mutex_t burn_control = PTHREAD_MUTEX_INITIALIZER;
static long burn_threads, burn_generation;

static void *burner(void *arg) {
    long generation = (long)(intptr_t)arg;
    while (__atomic_load_n(&burn_generation, __ATOMIC_RELAXED) == generation) do_work();
    return NULL;
}

/* Replaces the burners with `threads` new ones (0: none). Returns 0, or -1 if a thread could
   not be started (those started are stopped again). */
static int set_burn(long threads) {
    pthread_mutex_lock(&burn_control);
    long generation = __atomic_add_fetch(&burn_generation, 1, __ATOMIC_RELAXED);
    long started = 0;
    for (; started < threads; started++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, burner, (void *)(intptr_t)generation);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
    }
    if (started < threads) __atomic_add_fetch(&burn_generation, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&burn_threads, started < threads ? 0 : threads, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&burn_control);
    return started < threads ? -1 : 0;
}

/* The value of NAME in a query string ("a=1&b=2"): 1 and *out if it is a whole number in
   [0, max], 0 if absent, -1 if malformed or out of range. */
static int query_number(const char *query, const char *name, long max, long *out) {
    size_t len = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, name, len) != 0 || p[len] != '=') continue;
        char *end;
        errno = 0;
        long value = strtol(p + len + 1, &end, 10);
        if (end == p + len + 1 || (*end && *end != '&') || errno || value < 0 || value > max) return -1;
        *out = value;
        return 1;
    }
    return 0;
}

/* The value of NAME in a query string, percent-decoded into out: 1 if present and it fits in
   size - 1 bytes, 0 if absent, -1 if too long or badly encoded. */
static int query_text(const char *query, const char *name, char *out, size_t size) {
    size_t len = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, name, len) != 0 || p[len] != '=') continue;
        size_t n = 0;
        for (const char *v = p + len + 1; *v && *v != '&'; v++) {
            char c = *v;
            if (c == '%') {
                unsigned hex;
                if (sscanf(v + 1, "%2x", &hex) != 1 || !v[1] || !v[2]) return -1;
                c = (char)hex;
                v += 2;
            } else if (c == '+') {
                c = ' ';
            }
            if (n + 1 >= size) return -1;
            out[n++] = c;
        }
        out[n] = 0;
        return 1;
    }
    return 0;
}

/* The disk load (POST /fill): N MiB of a fixed pseudo-random pattern written to the VM's disk past
   its filesystem (from FILL_OFFSET on, where the image's 64 MiB ext4 ends), so a disk migration
   can be checked from inside: GET /fill says how far the writer is and the checksum of what it
   wrote; GET /fill?verify=1 reads the region back from the disk itself (O_DIRECT: not from the
   page cache, which moves with memory) and gives its checksum. */
#define FILL_OFFSET (64LL << 20)
#define FILL_CHUNK (1 << 20)
#define FILL_MAX_MIB 65536
static const char *fill_device = "/dev/vda";
static pthread_mutex_t fill_lock = PTHREAD_MUTEX_INITIALIZER;
static long fill_mib, fill_written_mib;
static int fill_running;
static uint64_t fill_checksum;
static char fill_error[160];

static uint64_t fill_next(uint64_t *state) {  /* xorshift64* */
    uint64_t x = *state;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t fill_fold(uint64_t hash, const uint64_t *words, size_t count) {
    for (size_t i = 0; i < count; i++) hash = (hash ^ words[i]) * 0x100000001b3ULL;
    return hash;
}

static long fill_rate;  /* MiB/s the writer keeps to; 0: as fast as it can */

static void *filler(void *arg) {
    long mib = (long)(intptr_t)arg, rate = fill_rate;
    double started = now_seconds();
    uint64_t state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)mib, hash = 0xcbf29ce484222325ULL;
    uint64_t *chunk = malloc(FILL_CHUNK);
    int fd = open(fill_device, O_WRONLY | O_CLOEXEC);
    char error[160] = "";
    if (!chunk || fd < 0) snprintf(error, sizeof error, "cannot open %s: %s", fill_device, strerror(errno));
    for (long i = 0; !error[0] && i < mib; i++) {
        for (size_t w = 0; w < FILL_CHUNK / 8; w++) chunk[w] = fill_next(&state);
        hash = fill_fold(hash, chunk, FILL_CHUNK / 8);
        if (pwrite(fd, chunk, FILL_CHUNK, FILL_OFFSET + (off_t)i * FILL_CHUNK) != FILL_CHUNK) {
            snprintf(error, sizeof error, "write at MiB %ld: %s", i, strerror(errno));
        } else if (fdatasync(fd) < 0) {  /* on the disk, MiB by MiB: what a migration must carry */
            snprintf(error, sizeof error, "fdatasync: %s", strerror(errno));
        }
        pthread_mutex_lock(&fill_lock);
        if (!error[0]) fill_written_mib = i + 1;
        pthread_mutex_unlock(&fill_lock);
        double ahead = rate > 0 ? started + (double)(i + 1) / rate - now_seconds() : 0;
        if (ahead > 0) {
            struct timespec pause = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
            nanosleep(&pause, NULL);
        }
    }
    if (fd >= 0) close(fd);
    free(chunk);
    pthread_mutex_lock(&fill_lock);
    fill_running = 0;
    fill_checksum = error[0] ? 0 : hash;
    snprintf(fill_error, sizeof fill_error, "%s", error);
    pthread_mutex_unlock(&fill_lock);
    return NULL;
}

/* Starts the writer. Returns 0, or -1 with an HTTP status and message. */
static int start_fill(long mib, long rate, int *status, char *error, size_t size) {
    int fd = open(fill_device, O_RDONLY | O_CLOEXEC);
    off_t disk = fd < 0 ? -1 : lseek(fd, 0, SEEK_END);
    if (fd >= 0) close(fd);
    if (disk < 0) {
        *status = 500;
        snprintf(error, size, "cannot read the size of %s: %s\n", fill_device, strerror(errno));
        return -1;
    }
    if (FILL_OFFSET + (off_t)mib * FILL_CHUNK > disk) {
        *status = 400;
        snprintf(error, size, "mib: %ld MiB past the filesystem needs a disk of %lld MiB; this one has %lld MiB\n",
            mib, (long long)(FILL_OFFSET >> 20) + mib, (long long)(disk >> 20));
        return -1;
    }
    pthread_mutex_lock(&fill_lock);
    if (fill_running) {
        pthread_mutex_unlock(&fill_lock);
        *status = 409;
        snprintf(error, size, "a fill is already running\n");
        return -1;
    }
    fill_running = 1; fill_mib = mib; fill_rate = rate; fill_written_mib = 0; fill_checksum = 0; fill_error[0] = 0;
    pthread_mutex_unlock(&fill_lock);
    pthread_t t;
    if (pthread_create(&t, NULL, filler, (void *)(intptr_t)mib) != 0) {
        pthread_mutex_lock(&fill_lock);
        fill_running = 0;
        pthread_mutex_unlock(&fill_lock);
        *status = 500;
        snprintf(error, size, "cannot start the writer\n");
        return -1;
    }
    pthread_detach(t);
    return 0;
}

static void fill_json(char *body, size_t size) {
    pthread_mutex_lock(&fill_lock);
    snprintf(body, size, "{\"mib\":%ld,\"writtenMiB\":%ld,\"running\":%s,\"checksum\":\"%016llx\",\"error\":\"%s\"}\n",
        fill_mib, fill_written_mib, fill_running ? "true" : "false", (unsigned long long)fill_checksum, fill_error);
    pthread_mutex_unlock(&fill_lock);
}

/* Reads the last fill's region back from the disk and gives its checksum. */
static void verify_fill(char *body, size_t size) {
    pthread_mutex_lock(&fill_lock);
    long mib = fill_running ? 0 : fill_mib;
    pthread_mutex_unlock(&fill_lock);
    uint64_t hash = 0xcbf29ce484222325ULL;
    void *chunk = NULL;
    int fd = open(fill_device, O_RDONLY | O_DIRECT | O_CLOEXEC);
    const char *error = fd < 0 ? strerror(errno) : posix_memalign(&chunk, 4096, FILL_CHUNK) ? "out of memory" : NULL;
    for (long i = 0; !error && i < mib; i++) {
        if (pread(fd, chunk, FILL_CHUNK, FILL_OFFSET + (off_t)i * FILL_CHUNK) != FILL_CHUNK) error = strerror(errno);
        else hash = fill_fold(hash, chunk, FILL_CHUNK / 8);
    }
    if (fd >= 0) close(fd);
    free(chunk);
    snprintf(body, size, "{\"mib\":%ld,\"checksum\":\"%016llx\",\"error\":\"%s\"}\n", mib,
        error ? 0ULL : (unsigned long long)hash, error ? error : "");
}

/* The marks (POST /mark): one value kept in three places that a snapshot treats differently —
   the VM's disk (/data, an ext4 on the qcow2), the process's memory, and tmpfs (/run, memory
   the kernel owns). A snapshot load brings back all three as they were when it was saved. */
#define MARK_MAX 64
static pthread_mutex_t mark_lock = PTHREAD_MUTEX_INITIALIZER;
static char mark_memory[MARK_MAX + 1];
static const char *mark_disk_path = "/data/vireo-mark", *mark_tmpfs_path = "/run/vireo-mark";

/* 1 when v is 1 to 64 characters of [A-Za-z0-9._-]. */
static int valid_mark(const char *v) {
    size_t n = strlen(v);
    if (n == 0 || n > MARK_MAX) return 0;
    for (const char *c = v; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
              || *c == '.' || *c == '_' || *c == '-')) return 0;
    return 1;
}

/* The mark stored in a file ("" when there is none, or it is not a mark). */
static void read_mark(const char *path, char *out) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t n = fread(out, 1, MARK_MAX, f);
    fclose(f);
    out[n] = 0;
    if (!valid_mark(out)) out[0] = 0;
}

/* Replaces the file at path with value, durably: a temporary file written and fsynced, renamed
   over the old one, and the directory fsynced so the rename itself is on the disk. Returns 0,
   or -1 with errno set. */
static int write_synced(const char *path, const char *value) {
    char tmp[512], dir[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = 0; else if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t n = strlen(value);
    if (write(fd, value, n) != (ssize_t)n || fsync(fd) < 0) { int e = errno; close(fd); errno = e; return -1; }
    if (close(fd) < 0 || rename(tmp, path) < 0) return -1;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    int rc = fsync(dfd);
    close(dfd);
    return rc;
}

/* The three marks as JSON. */
static void marks_json(char *body, size_t size) {
    char disk[MARK_MAX + 1], memory[MARK_MAX + 1], tmpfs[MARK_MAX + 1];
    read_mark(mark_disk_path, disk);
    read_mark(mark_tmpfs_path, tmpfs);
    pthread_mutex_lock(&mark_lock);
    memcpy(memory, mark_memory, sizeof memory);
    pthread_mutex_unlock(&mark_lock);
    snprintf(body, size, "{\"disk\":\"%s\",\"memory\":\"%s\",\"tmpfs\":\"%s\"}\n", disk, memory, tmpfs);
}

/* Writes value to the disk (synced), the memory and tmpfs; -1 with a message in error. */
static int set_mark(const char *value, char *error, size_t size) {
    pthread_mutex_lock(&mark_lock);
    int rc = 0;
    if (write_synced(mark_disk_path, value) < 0) {
        snprintf(error, size, "cannot write %s: %s\n", mark_disk_path, strerror(errno));
        rc = -1;
    } else {
        snprintf(mark_memory, sizeof mark_memory, "%s", value);
        FILE *f = fopen(mark_tmpfs_path, "w");
        if (!f || fputs(value, f) < 0 || fclose(f) != 0) {
            snprintf(error, size, "cannot write %s: %s\n", mark_tmpfs_path, strerror(errno));
            rc = -1;
        }
    }
    pthread_mutex_unlock(&mark_lock);
    return rc;
}

/* GET /connect: tries a TCP connection to IPv4 address:port within timeout_ms and describes the
   outcome as JSON in body. Blocks the worker serving it for up to the timeout. */
#define CONNECT_DEFAULT_MS 2000
#define CONNECT_MAX_MS 10000
static void try_connect(const struct sockaddr_in *to, long timeout_ms, char *body, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err = 0, timed_out = 0;
    if (fd < 0) {
        err = errno;
    } else if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0) {
        if (errno != EINPROGRESS) {
            err = errno;
        } else {
            double deadline = now_seconds() + timeout_ms / 1000.0;
            for (;;) {
                struct pollfd p = {fd, POLLOUT, 0};
                int left = (int)((deadline - now_seconds()) * 1000);
                int n = poll(&p, 1, left > 0 ? left : 0);
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) { err = errno; break; }
                if (n == 0) { timed_out = 1; break; }
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
                break;
            }
        }
    }
    if (fd >= 0) close(fd);
    if (timed_out)
        snprintf(body, size, "{\"connected\":false,\"error\":\"no answer within %ld ms\"}\n", timeout_ms);
    else if (err)
        snprintf(body, size, "{\"connected\":false,\"error\":\"%s\"}\n", strerror(err));
    else
        snprintf(body, size, "{\"connected\":true}\n");
}

/* Parses "a.b.c.d:port" (port 1-65535). Returns 0, or -1 when it is not that. */
static int parse_endpoint(const char *text, struct sockaddr_in *out) {
    char host[INET_ADDRSTRLEN];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host) return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || errno || port < 1 || port > 65535) return -1;
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static void read_file(const char *path, char *out, size_t size) {
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(out, (int)size, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, " \n")] = 0;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            poll(&pfd, 1, 5000);
            continue;
        }
        if (w <= 0) return -1;
        p += w; n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int status, const char *type, const char *body, int keep_alive) {
    char head[256];
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found"
        : status == 405 ? "Method Not Allowed" : status == 500 ? "Internal Server Error" : "Bad Request";
    size_t blen = strlen(body);
    int hlen = snprintf(head, sizeof head,
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
        status, reason, type, blen, keep_alive ? "keep-alive" : "close");
    if (send_all(fd, head, (size_t)hlen) < 0) return -1;
    return send_all(fd, body, blen);
}

static void metrics_text(char *out, size_t size) {
    size_t n = 0;
    uint64_t count = __atomic_load_n(&requests_total, __ATOMIC_RELAXED);
    n += snprintf(out + n, size - n,
        "# HELP vireo_web_requests_total Requests to / (the CPU-bound endpoint) served.\n"
        "# TYPE vireo_web_requests_total counter\nvireo_web_requests_total %llu\n"
        "# HELP vireo_web_request_duration_seconds Time from the arrival of a request to / to the end of its reply.\n"
        "# TYPE vireo_web_request_duration_seconds histogram\n", (unsigned long long)count);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cumulative += __atomic_load_n(&bucket_counts[i], __ATOMIC_RELAXED);
        n += snprintf(out + n, size - n, "vireo_web_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
            bucket_bounds[i], (unsigned long long)cumulative);
    }
    n += snprintf(out + n, size - n,
        "vireo_web_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
        "vireo_web_request_duration_seconds_sum %.9f\n"
        "vireo_web_request_duration_seconds_count %llu\n"
        "# HELP vireo_web_inflight_requests Requests to / being served now.\n"
        "# TYPE vireo_web_inflight_requests gauge\nvireo_web_inflight_requests %llu\n"
        "# HELP vireo_web_uptime_seconds Seconds since the service started.\n"
        "# TYPE vireo_web_uptime_seconds gauge\nvireo_web_uptime_seconds %.3f\n",
        (unsigned long long)count, __atomic_load_n(&duration_sum_ns, __ATOMIC_RELAXED) / 1e9,
        (unsigned long long)count, (unsigned long long)__atomic_load_n(&inflight, __ATOMIC_RELAXED),
        now_seconds() - started_at);
}

/* Serves one complete request (head ends at buf[head_len]) that arrived at `arrival`
   (CLOCK_REALTIME seconds, 0: unknown). Returns 0 to keep the connection. */
static int handle(int fd, char *req, size_t head_len, double arrival) {
    req[head_len - 1] = 0;
    char method[16], target[512], version[16];
    if (sscanf(req, "%15s %511s %15s", method, target, version) != 3) {
        respond(fd, 400, "text/plain", "bad request\n", 0);
        return -1;
    }
    /* HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only if asked. */
    int keep_alive = strcmp(version, "HTTP/1.0") != 0;
    long content_length = 0;
    for (char *line = strstr(req, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Connection:", 11) == 0) {
            const char *v = line + 13;
            while (*v == ' ') v++;
            if (strncasecmp(v, "close", 5) == 0) keep_alive = 0;
            if (strncasecmp(v, "keep-alive", 10) == 0) keep_alive = 1;
        }
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0) content_length = atol(line + 17);
    }
    char *query = strchr(target, '?');
    if (query) *query++ = 0;
    int is_dirty = strcmp(target, "/dirty") == 0, is_burn = strcmp(target, "/burn") == 0;
    int is_mark = strcmp(target, "/mark") == 0, is_fill = strcmp(target, "/fill") == 0;
    int method_ok = is_mark || is_fill ? strcmp(method, "GET") == 0 || strcmp(method, "POST") == 0
        : strcmp(method, is_dirty || is_burn ? "POST" : "GET") == 0;
    if (!method_ok) {
        respond(fd, 405, "text/plain", "method not allowed\n", 0);
        return -1;
    }
    if (content_length != 0) {  /* no endpoint reads a body; it would be taken for a request */
        respond(fd, 400, "text/plain", "no request body expected; parameters go in the query\n", 0);
        return -1;
    }
    char body[4096];
    int rc;
    if (strcmp(target, "/") == 0) {
        __atomic_add_fetch(&inflight, 1, __ATOMIC_RELAXED);
        double t0 = now_seconds(), read_at = realtime_seconds();
        /* Queued time counts; a receive time in the future (clock stepped) does not. */
        double queued = arrival > 0 && arrival <= read_at ? read_at - arrival : 0;
        do_work();
        snprintf(body, sizeof body, "{\"ok\":true,\"work\":%d}\n", WORK_ITERATIONS);
        /* Counted before the answer goes out (sending it takes microseconds), so whoever has
           the answer finds the request in /metrics, whichever worker serves that. */
        double elapsed = queued + (now_seconds() - t0);
        size_t b = 0;
        while (b < NBUCKETS && elapsed > bucket_bounds[b]) b++;
        if (b < NBUCKETS) __atomic_add_fetch(&bucket_counts[b], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&duration_sum_ns, (uint64_t)(elapsed * 1e9), __ATOMIC_RELAXED);
        __atomic_add_fetch(&requests_total, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&inflight, 1, __ATOMIC_RELAXED);
        rc = respond(fd, 200, "application/json", body, keep_alive);
    } else if (strcmp(target, "/metrics") == 0) {
        metrics_text(body, sizeof body);
        rc = respond(fd, 200, "text/plain; version=0.0.4", body, keep_alive);
    } else if (strcmp(target, "/status") == 0) {
        char uptime[64], boot_id[64];
        read_file("/proc/uptime", uptime, sizeof uptime);
        read_file("/proc/sys/kernel/random/boot_id", boot_id, sizeof boot_id);
        pthread_mutex_lock(&dirty_lock);
        long mib = dirty_mib, rate = dirty_rate;
        pthread_mutex_unlock(&dirty_lock);
        snprintf(body, sizeof body,
            "{\"name\":\"%s\",\"uptimeSeconds\":%s,\"requests\":%llu,\"bootId\":\"%s\","
            "\"dirtyMiB\":%ld,\"dirtyRateMiBps\":%ld,\"dirtiedPages\":%llu,\"lostWrites\":%llu,"
            "\"burnThreads\":%ld}\n",
            vm_name, uptime[0] ? uptime : "0",
            (unsigned long long)__atomic_load_n(&requests_total, __ATOMIC_RELAXED), boot_id, mib, rate,
            (unsigned long long)__atomic_load_n(&pages_dirtied, __ATOMIC_RELAXED),
            (unsigned long long)__atomic_load_n(&lost_writes, __ATOMIC_RELAXED),
            __atomic_load_n(&burn_threads, __ATOMIC_RELAXED));
        rc = respond(fd, 200, "application/json", body, keep_alive);
    } else if (is_dirty) {
        long mib = -1, rate = 0;
        const char *q = query ? query : "";
        if (query_number(q, "mib", 1 << 20, &mib) != 1) {
            rc = respond(fd, 400, "text/plain",
                "mib: give the MiB to dirty as a whole number up to 1048576 (0 stops)\n", keep_alive);
        } else if (query_number(q, "rate", 1 << 20, &rate) < 0) {
            rc = respond(fd, 400, "text/plain",
                "rate: give MiB/s as a whole number up to 1048576 (0: as fast as it can)\n", keep_alive);
        } else if (set_dirty(mib, rate, body, sizeof body) < 0) {
            rc = respond(fd, 400, "text/plain", body, keep_alive);
        } else {
            snprintf(body, sizeof body, "{\"dirtyMiB\":%ld,\"dirtyRateMiBps\":%ld}\n", mib, mib ? rate : 0);
            rc = respond(fd, 200, "application/json", body, keep_alive);
        }
    } else if (is_burn) {
        long threads = -1;
        if (query_number(query ? query : "", "threads", BURN_MAX_THREADS, &threads) != 1) {
            rc = respond(fd, 400, "text/plain",
                "threads: give the number of busy threads as a whole number up to 64 (0 stops them)\n", keep_alive);
        } else if (set_burn(threads) < 0) {
            rc = respond(fd, 500, "text/plain", "could not start the busy threads\n", keep_alive);
        } else {
            snprintf(body, sizeof body, "{\"burnThreads\":%ld}\n", threads);
            rc = respond(fd, 200, "application/json", body, keep_alive);
        }
    } else if (is_mark && strcmp(method, "GET") == 0) {
        marks_json(body, sizeof body);
        rc = respond(fd, 200, "application/json", body, keep_alive);
    } else if (is_mark) {
        char value[MARK_MAX + 2];
        if (query_text(query ? query : "", "value", value, sizeof value) != 1 || !valid_mark(value)) {
            rc = respond(fd, 400, "text/plain",
                "value: give the mark as 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'\n", keep_alive);
        } else if (set_mark(value, body, sizeof body) < 0) {
            rc = respond(fd, 500, "text/plain", body, keep_alive);
        } else {
            marks_json(body, sizeof body);
            rc = respond(fd, 200, "application/json", body, keep_alive);
        }
    } else if (is_fill && strcmp(method, "GET") == 0) {
        long verify = 0;
        if (query_number(query ? query : "", "verify", 1, &verify) < 0) {
            rc = respond(fd, 400, "text/plain", "verify: 1 reads the region back from the disk, 0 does not\n", keep_alive);
        } else {
            if (verify) verify_fill(body, sizeof body); else fill_json(body, sizeof body);
            rc = respond(fd, 200, "application/json", body, keep_alive);
        }
    } else if (is_fill) {
        long mib = 0, rate = 0;
        int status = 400;
        const char *q = query ? query : "";
        if (query_number(q, "mib", FILL_MAX_MIB, &mib) != 1 || mib < 1) {
            rc = respond(fd, 400, "text/plain", "mib: give the MiB to write as a whole number from 1 to 65536\n",
                keep_alive);
        } else if (query_number(q, "rate", 1 << 20, &rate) < 0) {
            rc = respond(fd, 400, "text/plain",
                "rate: give MiB/s as a whole number up to 1048576 (0: as fast as it can)\n", keep_alive);
        } else if (start_fill(mib, rate, &status, body, sizeof body) < 0) {
            rc = respond(fd, status, "text/plain", body, keep_alive);
        } else {
            fill_json(body, sizeof body);
            rc = respond(fd, 200, "application/json", body, keep_alive);
        }
    } else if (strcmp(target, "/connect") == 0) {
        char to[64];
        struct sockaddr_in address;
        long timeout_ms = CONNECT_DEFAULT_MS;
        const char *q = query ? query : "";
        if (query_text(q, "to", to, sizeof to) != 1 || parse_endpoint(to, &address) < 0) {
            rc = respond(fd, 400, "text/plain", "to: give the IPv4 address and TCP port to connect to as IP:PORT\n",
                keep_alive);
        } else if (query_number(q, "timeoutMs", CONNECT_MAX_MS, &timeout_ms) < 0 || timeout_ms < 1) {
            rc = respond(fd, 400, "text/plain",
                "timeoutMs: give the milliseconds to wait as a whole number from 1 to 10000\n", keep_alive);
        } else {
            try_connect(&address, timeout_ms, body, sizeof body);
            rc = respond(fd, 200, "application/json", body, keep_alive);
        }
    } else {
        rc = respond(fd, 404, "text/plain", "not found\n", keep_alive);
    }
    return rc < 0 || !keep_alive ? -1 : 0;
}

static void close_conn(struct conn *c) {
    epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

/* Reads what is available and serves every complete request in the buffer. */
static void service(struct conn *c) {
    for (;;) {
        struct iovec iov = {c->buf + c->len, BUF_SIZE - 1 - c->len};
        char control[CMSG_SPACE(sizeof(struct timespec))];
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t r = recvmsg(c->fd, &msg, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) break;
        if (r <= 0) { close_conn(c); return; }
        if (c->len == 0) {  /* the first bytes of a request: when did the kernel receive them? */
            c->arrival = 0;
            for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m))
                if (m->cmsg_level == SOL_SOCKET && m->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(m), sizeof ts);
                    c->arrival = ts.tv_sec + ts.tv_nsec / 1e9;
                }
        }
        c->len += (size_t)r;
        c->buf[c->len] = 0;
        char *end;
        while ((end = strstr(c->buf, "\r\n\r\n")) != NULL) {
            size_t head_len = (size_t)(end - c->buf) + 4;
            if (handle(c->fd, c->buf, head_len, c->arrival) < 0) { close_conn(c); return; }
            memmove(c->buf, c->buf + head_len, c->len - head_len);
            c->len -= head_len;
            c->buf[c->len] = 0;
        }
        if (c->len >= BUF_SIZE - 1) {  /* request head too large */
            respond(c->fd, 400, "text/plain", "request too large\n", 0);
            close_conn(c);
            return;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0) close_conn(c);
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        struct epoll_event ev;
        int n = epoll_wait(epoll_fd, &ev, 1, -1);
        if (n <= 0) continue;
        if (ev.data.ptr == NULL) {  /* the listening socket */
            int fd;
            while ((fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct conn *c = calloc(1, sizeof *c);
                if (!c) { close(fd); continue; }
                c->fd = fd;
                struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
                if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &cev) < 0) { close(fd); free(c); }
            }
        } else {
            service(ev.data.ptr);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) vm_name = argv[1];
    int port = argc > 2 ? atoi(argv[2]) : 80;
    signal(SIGPIPE, SIG_IGN);
    started_at = now_seconds();

    listen_fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int family_v6 = listen_fd >= 0;
    if (!family_v6) listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    hot_pages = mmap(NULL, HOT_PAGES * PAGE_SIZE, PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (hot_pages == MAP_FAILED) { perror("vireo-web: mmap"); return 1; }
    int one = 1, zero = 0;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Receive times (SCM_TIMESTAMPNS) on every connection: accepted sockets inherit it, and
       so have it for a request that arrives before accept() returns. */
    setsockopt(listen_fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    int bound;
    if (family_v6) {
        /* Dual stack: one socket for IPv4 and IPv6 ("all addresses"). */
        setsockopt(listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
        bound = bind(listen_fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_ANY)};
        bound = bind(listen_fd, (struct sockaddr *)&a, sizeof a);
    }
    if (bound < 0 || listen(listen_fd, 1024) < 0) { perror("vireo-web: listen"); return 1; }

    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);

    long workers = sysconf(_SC_NPROCESSORS_ONLN);
    if (workers < 1) workers = 1;
    for (long i = 1; i < workers; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
    }
    pthread_t dirty_thread;
    pthread_create(&dirty_thread, NULL, dirtier, NULL);
    /* Elsewhere than in a guest (tests), the marks go where these say. */
    if (getenv("VIREO_WEB_MARK_DISK")) mark_disk_path = getenv("VIREO_WEB_MARK_DISK");
    if (getenv("VIREO_WEB_MARK_TMPFS")) mark_tmpfs_path = getenv("VIREO_WEB_MARK_TMPFS");
    if (getenv("VIREO_WEB_FILL_DEVICE")) fill_device = getenv("VIREO_WEB_FILL_DEVICE");
    const char *ready_path = getenv("VIREO_WEB_READY");  /* elsewhere than in a guest: tests */
    FILE *ready = fopen(ready_path ? ready_path : "/run/vireo-web.ready", "w");
    if (ready) fclose(ready);
    fprintf(stderr, "vireo-web: %s listening on :%d with %ld workers\n", vm_name, port, workers);
    worker(NULL);
    return 0;
}
