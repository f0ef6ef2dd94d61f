/// Everything that runs inside a guest. Each text is a file in `Embedded/` in its own language,
/// compiled into the `vireo` binary by the EmbedFiles plugin (no resources to ship or lose). These
/// texts are part of an image's content key: editing one rebuilds the images.
enum GuestFiles {
    /// PID 1 of every image (busybox `sh`). `@MODULES@` and `@SERVICE@` are filled in per image.
    ///
    /// Kernel command line (all optional): `vireo.name=NAME vireo.ip=ADDR/PREFIX vireo.gw=GW`.
    /// The last thing it does is print one `VIREO-READY name=... ip=...` line on the serial port;
    /// drivers wait for that line, so nothing may print a line starting with `VIREO-READY` earlier.
    static let initScript = Embedded.initSh

    /// Starts the web service and waits until it listens, so the ready marker means "serving".
    static let webServiceStart = Embedded.webServiceStartSh

    /// Run by busybox acpid for the power button: a clean stop, so /data is consistent.
    static let powerButtonHandler = Embedded.powerButtonSh
}
