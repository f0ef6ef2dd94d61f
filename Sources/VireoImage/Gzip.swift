import CompressNIO
import Foundation
import NIOCore
import VireoModel

/// gzip in process (zlib through compress-nio): the initramfs, gzip-compressed kernel modules and
/// kernel payloads.
enum Gzip {
    /// `data` as one gzip member at the best compression, with no name or time in its header, so
    /// the same input always gives the same bytes.
    static func compress(_ data: Data) throws -> Data {
        var input = ByteBuffer(bytes: data)
        let output = try input.compress(with: .gzip(configuration: .init(compressionLevel: 9)))
        return Data(output.readableBytesView)
    }

    /// The first gzip member at the start of `data`; bytes after it are ignored (a kernel payload
    /// is followed by the rest of its bzImage). `name` says what `data` is in an error.
    static func decompress(_ data: Data, name: String, maxBytes: Int = 1 << 30) throws -> Data {
        var input = ByteBuffer(bytes: data)
        do {
            let output = try input.decompress(with: .gzip(), maxSize: maxBytes)
            return Data(output.readableBytesView)
        } catch {
            throw VireoError(.failedPrecondition, "\(name) is not valid gzip: \(error)")
        }
    }
}
