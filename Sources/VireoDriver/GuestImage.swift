/// What a driver needs of a built guest image to boot it (QEMU directly, libvirt through its
/// domain XML): the image builder makes it, drivers only read it.
public struct GuestImage: Sendable, Codable, Equatable {
    public var kernel: String
    public var initrd: String
    /// The qcow2 every VM's overlay is backed by; never written.
    public var baseDisk: String
    public var kernelCommandLine: String
    /// The line prefix the guest prints on its serial console when it is ready.
    public var readyMarker: String

    public init(kernel: String, initrd: String, baseDisk: String, kernelCommandLine: String, readyMarker: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.baseDisk = baseDisk
        self.kernelCommandLine = kernelCommandLine
        self.readyMarker = readyMarker
    }
}
