import NIOCore

/// One end of a byte pipe between two channels on the same event loop: what one reads, the other
/// writes, in order. A side reads only while its partner can take more (so a slow receiver slows
/// the sender instead of filling memory), and when one side ends, the other ends too — after what
/// it still had to write has been written.
final class Splice: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: Splice?
    private var context: ChannelHandlerContext?
    /// A read the channel asked for while the partner could take no more.
    private var readPending = false
    /// The last write handed to this side; it completes after every earlier one.
    private var lastWrite: EventLoopFuture<Void>?
    /// What the partner read before this side's channel was there to write it (a read NIO had
    /// asked for before the partner's end was added).
    private var queued: [ByteBuffer] = []
    /// The partner's channel has closed.
    private var partnerGone = false

    /// Two ends that feed each other; add one to each channel's pipeline.
    static func pair() -> (Splice, Splice) {
        let first = Splice()
        let second = Splice()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    private init() {}

    /// A migration moves hundreds of MiB: reads of up to 1 MiB, up to 4 MiB queued for the
    /// partner before this side stops reading, and a 4 MiB socket send buffer. With NIO's
    /// defaults (64 KiB) the two sides took turns: a paused move of 512 MiB dirtying 256 MiB was
    /// down 363 ms (median of 5), against 284–330 ms with these (docs/benchmarks.md).
    static let readSizes = AdaptiveRecvByteBufferAllocator(minimum: 64 << 10, initial: 256 << 10, maximum: 1 << 20)
    static let waterMarks = ChannelOptions.Types.WriteBufferWaterMark(low: 1 << 20, high: 4 << 20)

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let options = context.channel.syncOptions {
            try? options.setOption(.recvAllocator, value: Self.readSizes)
            try? options.setOption(.writeBufferWaterMark, value: Self.waterMarks)
            try? options.setOption(.socketOption(.so_sndbuf), value: 4 << 20)
        }
        for buffer in queued { partnerWrite(buffer) }
        if !queued.isEmpty { context.flush() }
        queued = []
        if partnerGone, context.channel.isActive { context.close(promise: nil) }
        // The partner's channel may have wanted to read before this side was there to take it.
        partner?.partnerCanTakeMore()
    }

    func channelActive(context: ChannelHandlerContext) {
        if partnerGone { context.close(promise: nil) }
        context.fireChannelActive()
    }

    /// Also when the end is added to a channel that has already closed (it then never sees the
    /// channel go inactive): the partner must end either way.
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner?.partnerEnded()
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        partner?.partnerWrite(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerEnded()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerCanTakeMore() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? false {
            context.read()
        } else {
            readPending = true
        }
    }

    private func partnerWrite(_ buffer: ByteBuffer) {
        guard let context else {
            queued.append(buffer)
            return
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(buffer), promise: promise)
        lastWrite = promise.futureResult
    }

    private func partnerCanTakeMore() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }

    /// The partner's channel closed: write out what is queued here, then close this channel too
    /// (at once if it has not joined yet).
    private func partnerEnded() {
        partnerGone = true
        guard let context else { return }
        context.flush()
        let channel = context.channel
        if let lastWrite {
            lastWrite.whenComplete { _ in channel.close(promise: nil) }
        } else {
            channel.close(promise: nil)
        }
    }
}
