import Foundation

/// A "newc" cpio archive, the format the kernel unpacks as an initramfs.
///
/// Written here rather than with `cpio -o` so that the archive can hold root-owned files and the
/// /dev/console device node without the builder running as root, and so that it is byte-for-byte
/// reproducible (all timestamps 0, entries in the order added).
struct CPIOArchive {
    private(set) var data = Data()
    private var nextInode: UInt32 = 1

    mutating func directory(_ path: String, mode: UInt32 = 0o755) {
        append(path, mode: 0o040000 | mode, body: Data())
    }

    mutating func file(_ path: String, contents: Data, mode: UInt32 = 0o644) {
        append(path, mode: 0o100000 | mode, body: contents)
    }

    mutating func symlink(_ path: String, target: String) {
        append(path, mode: 0o120777, body: Data(target.utf8))
    }

    mutating func characterDevice(_ path: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600) {
        append(path, mode: 0o020000 | mode, body: Data(), deviceMajor: major, deviceMinor: minor)
    }

    /// The archive with its trailer; call once, at the end.
    mutating func finish() -> Data {
        append("TRAILER!!!", mode: 0, body: Data(), isTrailer: true)
        return data
    }

    private mutating func append(
        _ path: String, mode: UInt32, body: Data, deviceMajor: UInt32 = 0, deviceMinor: UInt32 = 0,
        isTrailer: Bool = false
    ) {
        let name = Data(path.utf8) + [0]
        let inode = isTrailer ? 0 : nextInode
        nextInode += 1
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields: [UInt32] = [
            inode, mode, 0, 0, mode & 0o040000 != 0 ? 2 : 1, 0, UInt32(body.count), 0, 0,
            deviceMajor, deviceMinor, UInt32(name.count), 0,
        ]
        var header = "070701"
        for field in fields { header += String(format: "%08X", field) }
        data.append(Data(header.utf8))
        data.append(name)
        padToFour()
        data.append(body)
        padToFour()
    }

    private mutating func padToFour() {
        let remainder = data.count % 4
        if remainder != 0 { data.append(Data(count: 4 - remainder)) }
    }
}
