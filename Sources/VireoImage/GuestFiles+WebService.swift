extension GuestFiles {
    /// Iterations of the per-request work loop in `GET /`. Tuned so one request costs about
    /// 3 ms of guest CPU under TCG on the reference machines (2-core, no hardware KVM). TCG runs this
    /// register-only loop at nearly native speed (about 2 ns an iteration), so it costs the same
    /// under KVM.
    static let webWorkIterations = 1_400_000

    /// `/usr/bin/vireo-web` of the `web` image, built with `cc -O2 -static -pthread`.
    ///
    /// One epoll set shared by one worker thread per online CPU; connections are armed
    /// EPOLLONESHOT so exactly one worker owns a connection at a time. Keep-alive clients therefore
    /// never pin a worker while idle. Usage: `vireo-web NAME PORT`; once listening it creates
    /// /run/vireo-web.ready (init waits for it before printing the ready marker; `VIREO_WEB_READY`
    /// names another file, for running it on a host).
    ///
    /// Endpoints: `GET /` (fixed CPU work, the measured workload), `GET /metrics` (Prometheus text,
    /// about `/` only), `GET /status` (name, uptime, boot id, the dirtying load and the burners),
    /// `POST /burn?threads=N`: N threads that spin on integer work until told otherwise (`threads=0`
    /// stops them; up to 64) — a CPU-hungry neighbour whose hunger is one vCPU per thread — and
    /// `POST /dirty?mib=N[&rate=R]`: a memory-dirtying load for live-migration tests. One thread
    /// (at nice 10, so HTTP stays responsive) writes one word in every 4 KiB page of an N MiB buffer,
    /// in a loop, as fast as it can or at R MiB/s of pages; `mib=0` stops it and frees the buffer.
    /// The buffer is allocated and populated before the reply; a size that would leave less than
    /// 16 MiB of the guest's available memory is refused (400) and the current load kept. Before
    /// writing a page again the thread checks it still holds what it wrote last time — the load's
    /// pages, and 8 pages it writes after every MiB (pages written far more often); `/status`
    /// counts the pages that did not (`lostWrites`: writes a migration failed to carry over).
    ///
    /// Snapshot checks: `POST /mark?value=V` (V: 1 to 64 characters of `[A-Za-z0-9._-]`, else 400)
    /// keeps V in three places a snapshot treats alike but a reboot or a disk-only copy would not:
    /// `/data/vireo-mark` on the VM's disk (written to a temporary file, fsynced, renamed, the
    /// directory fsynced), the process's memory, and `/run/vireo-mark` on tmpfs; `GET /mark`
    /// answers `{"disk":"…","memory":"…","tmpfs":"…"}` (empty strings where unset). Network checks:
    /// `GET /connect?to=IP:PORT[&timeoutMs=N]` tries a TCP connection from the guest to an IPv4
    /// address (N from 1 to 10000, default 2000) and answers `{"connected":true}` or
    /// `{"connected":false,"error":"…"}` (the worker serving it waits meanwhile). On a host,
    /// `VIREO_WEB_MARK_DISK` and `VIREO_WEB_MARK_TMPFS` name other files for the marks.
    ///
    /// Disk checks: `POST /fill?mib=N[&rate=R]` (N from 1 to 65536) starts a writer that puts N MiB
    /// of a fixed pseudo-random pattern on the VM's disk past its 64 MiB filesystem, at R MiB/s
    /// (default: as fast as it can), `fdatasync`ing each MiB
    /// (400 when the disk is too small, 409 while one runs); `GET /fill` answers
    /// `{"mib","writtenMiB","running","checksum","error"}` (the checksum of what it wrote, once done);
    /// `GET /fill?verify=1` reads that region back from the disk with `O_DIRECT` (not from the page
    /// cache, which a migration carries with memory) and answers its checksum. On a host,
    /// `VIREO_WEB_FILL_DEVICE` names another file.
    ///
    /// A request's duration (`vireo_web_request_duration_seconds`) runs from the moment the guest's
    /// kernel received it (the socket's `SO_TIMESTAMPNS` receive time) to the end of the reply, so
    /// time spent queued behind other requests counts, as a client would see it; where the kernel
    /// gives no timestamp it runs from the moment the service read the request.
    static let webServiceSource = Embedded.vireoWebC
}
