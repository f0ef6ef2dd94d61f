import Foundation

/// The thread every libvirt driver in the process runs on (their actors' executor).
///
/// libvirt's calls block: a `qemu:///system` call is a round trip to libvirtd, the first connection
/// waits for its capability probe (about 9 s here), and a shutdown or destroy waits for QEMU. Run on
/// Swift's cooperative pool — as many threads as cores, two here — they would stall the agent's
/// heartbeats and everything else for that long. On a thread of their own they stall nothing but
/// other libvirt calls.
final class LibvirtThread: SerialExecutor, @unchecked Sendable {
    static let shared = LibvirtThread()

    private let condition = NSCondition()
    /// Jobs waiting to run, in order; guarded by `condition`.
    private var jobs: [UnownedJob] = []

    private init() {
        let thread = Thread { [unowned self] in self.run() }
        thread.name = "libvirt-calls"
        thread.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedSerialExecutor())
        }
    }
}
