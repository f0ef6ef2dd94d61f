import Foundation
import NIOCore
import Synchronization
import VireoAPI
import VireoModel

/// Encodes pages of `GET /v1/vms` from each VM's own JSON, kept while its view is unchanged.
///
/// A page cached by the cluster's version is encoded once per change; but while VMs are being
/// created every request meets a new version, and encoding 100 views (their dates above all) was
/// most of a request's time. A change touches one VM, so the others' JSON is reused: a page is
/// then one comparison per VM and a copy. The bytes are what `VireoJSON.encoder()` makes of the
/// `VMPage` (keys sorted), which `VMListEncoderTests` checks.
final class VMListEncoder: Sendable {
    private struct Fragment {
        var view: VMView
        var json: [UInt8]
    }
    private let fragments = Mutex<[VMID: Fragment]>([:])
    /// Above this many kept VMs (deleted ones are never removed one by one), start again.
    private let capacity: Int

    init(capacity: Int = 200_000) { self.capacity = capacity }

    func encode(_ page: VMPage) throws -> ByteBuffer {
        let kept = fragments.withLock { kept in
            page.items.map { view in kept[view.id].flatMap { $0.view == view ? $0.json : nil } }
        }
        var fresh: [VMID: Fragment] = [:]
        let encoder = VireoJSON.encoder()
        var buffer = ByteBuffer()
        buffer.reserveCapacity(page.items.count * 320 + 64)
        buffer.writeString(#"{"items":["#)
        for (index, view) in page.items.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            if let json = kept[index] {
                buffer.writeBytes(json)
            } else {
                let json = Array(try encoder.encode(view))
                fresh[view.id] = Fragment(view: view, json: json)
                buffer.writeBytes(json)
            }
        }
        buffer.writeString("]")
        if let next = page.next {
            buffer.writeString(#","next":"#)
            buffer.writeBytes(try encoder.encode(next))
        }
        buffer.writeString("}")
        if !fresh.isEmpty {
            fragments.withLock { kept in
                if kept.count + fresh.count > capacity { kept.removeAll(keepingCapacity: true) }
                kept.merge(fresh) { _, new in new }
            }
        }
        return buffer
    }
}
