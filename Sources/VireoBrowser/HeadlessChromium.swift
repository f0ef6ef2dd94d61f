import Foundation
import Synchronization
import VireoModel

#if canImport(Glibc)
    import Glibc
#endif

/// Debian's `chromium`, headless, driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: the browser reads commands on its fd 3 and writes answers and
/// events on its fd 4, each a JSON text ended by a NUL byte). No port is opened, and every name
/// and address but 127.0.0.1 resolves to nothing, so the browser reaches loopback only.
/// Used to check the web console in a real browser and to time it (`vireo bench console`).
public final class HeadlessChromium: Sendable {
    public static let defaultPath = "/usr/bin/chromium"

    let pid: pid_t
    let commands: Int32
    let answers: Int32
    /// The browser's profile and its log (`chromium.log`), removed by `close()`.
    public let directory: String
    private let state = Mutex(Pending())

    struct Pending {
        var nextID = 1
        var waiting: [Int: CheckedContinuation<JSONValue, any Error>] = [:]
        var dialogs: [String] = []
        var exceptions: [String] = []
        var closed = false
    }

    /// Starts the browser with a fresh profile in a new directory under `parent`.
    public init(path: String = HeadlessChromium.defaultPath, parent: String = NSTemporaryDirectory()) throws {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw VireoError(.unavailable, "\(path) is missing: install Debian's chromium (scripts/install-deps.sh does)")
        }
        directory = (parent as NSString).appendingPathComponent("vireo-chromium-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let arguments = [
            path, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
            "--user-data-dir=\(directory)/profile", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability", "--no-pings",
            "--disable-client-side-phishing-detection", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--hide-scrollbars", "--mute-audio", "--window-size=1280,800", "about:blank",
        ]
        var toBrowser: [Int32] = [0, 0]
        var fromBrowser: [Int32] = [0, 0]
        guard pipe(&toBrowser) == 0, pipe(&fromBrowser) == 0 else {
            throw VireoError(.internal, "pipe: \(String(cString: strerror(errno)))")
        }
        // Not inherited by anything else started meanwhile; the spawn's dup2 clears it on 3 and 4.
        for fd in toBrowser + fromBrowser { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "\(directory)/chromium.log", O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_adddup2(&actions, toBrowser[0], 3)
        posix_spawn_file_actions_adddup2(&actions, fromBrowser[1], 4)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group, so the browser's helpers end with it; no signal blocked (a test
        // thread's blocked SIGTERM would be inherited).
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        let cArguments = arguments.map { strdup($0) } + [nil]
        defer { for a in cArguments { free(a) } }
        let result = posix_spawn(&pid, path, &actions, &attributes, cArguments, environ)
        Glibc.close(toBrowser[0])
        Glibc.close(fromBrowser[1])
        guard result == 0 else {
            Glibc.close(toBrowser[1])
            Glibc.close(fromBrowser[0])
            throw VireoError(.internal, "cannot start \(path): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        commands = toBrowser[1]
        answers = fromBrowser[0]
        let thread = Thread { [self] in readAnswers() }
        thread.name = "chromium-devtools"
        thread.start()
    }

    /// Sends one DevTools command (to a page's `session`, or to the browser) and returns its result.
    @discardableResult
    public func send(_ method: String, _ params: [String: JSONValue] = [:], session: String? = nil) async throws
        -> JSONValue
    {
        try await withCheckedThrowingContinuation { continuation in
            let id: Int? = state.withLock { s in
                guard !s.closed else { return nil }
                let id = s.nextID
                s.nextID += 1
                s.waiting[id] = continuation
                return id
            }
            guard let id else {
                continuation.resume(throwing: VireoError(.unavailable, "the browser has ended (see \(directory)/chromium.log)"))
                return
            }
            var message: [String: JSONValue] = ["id": .number(Double(id)), "method": .string(method), "params": .object(params)]
            if let session { message["sessionId"] = .string(session) }
            var data = (try? JSONEncoder().encode(JSONValue.object(message))) ?? Data()
            data.append(0)
            let written = data.withUnsafeBytes { buffer -> Bool in
                var offset = 0
                while offset < buffer.count {
                    let n = write(commands, buffer.baseAddress! + offset, buffer.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return false }
                    offset += n
                }
                return true
            }
            if !written, let waiting = state.withLock({ $0.waiting.removeValue(forKey: id) }) {
                waiting.resume(throwing: VireoError(.unavailable, "cannot write to the browser: it has ended"))
            }
        }
    }

    /// Reads the browser's answers until it closes its end.
    private func readAnswers() {
        var pending = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(answers, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            pending.append(contentsOf: buffer[0..<n])
            while let end = pending.firstIndex(of: 0) {
                let message = pending[pending.startIndex..<end]
                pending = Data(pending[(end + 1)...])
                if let value = try? JSONDecoder().decode(JSONValue.self, from: message) { handle(value) }
            }
        }
        Glibc.close(answers)
        let waiting = state.withLock { s in
            s.closed = true
            defer { s.waiting.removeAll() }
            return Array(s.waiting.values)
        }
        for continuation in waiting {
            continuation.resume(throwing: VireoError(.unavailable, "the browser has ended (see \(directory)/chromium.log)"))
        }
    }

    private func handle(_ message: JSONValue) {
        if let id = message["id"]?.intValue {
            guard let continuation = state.withLock({ $0.waiting.removeValue(forKey: id) }) else { return }
            if let error = message["error"] {
                let text = error["message"]?.stringValue ?? "\(error)"
                continuation.resume(throwing: VireoError(.internal, "DevTools: \(text)"))
            } else {
                continuation.resume(returning: message["result"] ?? .null)
            }
            return
        }
        switch message["method"]?.stringValue {
        case "Runtime.exceptionThrown":
            let details = message["params"]?["exceptionDetails"]
            let text =
                details?["exception"]?["description"]?.stringValue ?? details?["text"]?.stringValue ?? "an exception"
            state.withLock { $0.exceptions.append(text) }
        case "Page.javascriptDialogOpening":
            // Confirmations are accepted, as a user who clicked on purpose would; noted for tests.
            let text = message["params"]?["message"]?.stringValue ?? ""
            state.withLock { $0.dialogs.append(text) }
            if let session = message["sessionId"]?.stringValue {
                Task { try? await self.send("Page.handleJavaScriptDialog", ["accept": .bool(true)], session: session) }
            }
        default:
            break
        }
    }

    /// Uncaught script errors of every page so far.
    public var exceptions: [String] { state.withLock { $0.exceptions } }
    /// Dialogs (confirm, alert) that were answered so far.
    public var dialogs: [String] { state.withLock { $0.dialogs } }

    /// Opens a new page (tab) of `width`×`height` CSS pixels.
    public func newPage(width: Int = 1280, height: Int = 800) async throws -> BrowserPage {
        let target = try await send("Target.createTarget", ["url": .string("about:blank")])
        guard let targetID = target["targetId"]?.stringValue else {
            throw VireoError(.internal, "DevTools: Target.createTarget gave no targetId")
        }
        let attached = try await send("Target.attachToTarget", ["targetId": .string(targetID), "flatten": .bool(true)])
        guard let session = attached["sessionId"]?.stringValue else {
            throw VireoError(.internal, "DevTools: Target.attachToTarget gave no sessionId")
        }
        let page = BrowserPage(browser: self, session: session)
        try await send("Page.enable", session: session)
        try await send("Runtime.enable", session: session)
        try await page.resize(width: width, height: height)
        return page
    }

    /// Ends the browser and every process it started, and removes its directory.
    public func close() {
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        Glibc.close(commands)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// One tab of a `HeadlessChromium`.
public struct BrowserPage: Sendable {
    let browser: HeadlessChromium
    let session: String

    public func resize(width: Int, height: Int) async throws {
        try await browser.send(
            "Emulation.setDeviceMetricsOverride",
            [
                "width": .number(Double(width)), "height": .number(Double(height)), "deviceScaleFactor": .number(1),
                "mobile": .bool(false),
            ], session: session)
    }

    public func navigate(_ url: String) async throws {
        let answer = try await browser.send("Page.navigate", ["url": .string(url)], session: session)
        if let error = answer["errorText"]?.stringValue { throw VireoError(.unavailable, "cannot load \(url): \(error)") }
    }

    /// Runs `expression` in the page (awaiting it when it is a promise) and returns its value as JSON.
    @discardableResult
    public func evaluate(_ expression: String) async throws -> JSONValue {
        let answer = try await browser.send(
            "Runtime.evaluate",
            ["expression": .string(expression), "returnByValue": .bool(true), "awaitPromise": .bool(true)],
            session: session)
        if let details = answer["exceptionDetails"] {
            let text = details["exception"]?["description"]?.stringValue ?? details["text"]?.stringValue ?? "\(details)"
            throw VireoError(.internal, "in the page: \(text)")
        }
        return answer["result"]?["value"] ?? .null
    }

    /// Waits until `condition` (a script expression) is true in the page.
    public func waitFor(_ condition: String, within seconds: Double = 10, _ what: String? = nil) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while true {
            if case .bool(true) = try await evaluate("Boolean(\(condition))") { return }
            guard ContinuousClock.now < deadline else {
                let shown = try? await evaluate("(document.body?.innerText ?? '').slice(0, 600)").stringValue
                throw VireoError(
                    .unavailable,
                    "in the browser: \(what ?? condition) did not happen within \(seconds) s; the page shows: \(shown ?? "?")")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Clicks the middle of the element `selector` finds with the mouse, as a person would.
    public func click(_ selector: String) async throws {
        let box = try await evaluate(
            """
            (() => { const e = document.querySelector(\(Self.quoted(selector))); if (!e) return null;
              e.scrollIntoView({block: "center"}); const r = e.getBoundingClientRect();
              return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()
            """)
        guard let x = box["x"]?.doubleValue, let y = box["y"]?.doubleValue else {
            throw VireoError(.notFound, "in the browser: nothing matches \(selector)")
        }
        for type in ["mousePressed", "mouseReleased"] {
            try await browser.send(
                "Input.dispatchMouseEvent",
                [
                    "type": .string(type), "x": .number(x), "y": .number(y), "button": .string("left"),
                    "clickCount": .number(1),
                ], session: session)
        }
    }

    /// Presses and releases Enter on whatever has the keyboard focus.
    public func pressEnter() async throws {
        for type in ["keyDown", "keyUp"] {
            var event: [String: JSONValue] = [
                "type": .string(type), "key": .string("Enter"), "code": .string("Enter"),
                "windowsVirtualKeyCode": .number(13), "nativeVirtualKeyCode": .number(13),
            ]
            if type == "keyDown" { event["text"] = .string("\r") }
            try await browser.send("Input.dispatchKeyEvent", event, session: session)
        }
    }

    /// A PNG of the whole page (up to `maxHeight` pixels tall).
    public func screenshot(maxHeight: Int = 4000) async throws -> Data {
        let metrics = try await browser.send("Page.getLayoutMetrics", session: session)
        let size = metrics["cssContentSize"]
        let width = size?["width"]?.doubleValue ?? 1280
        let height = min(size?["height"]?.doubleValue ?? 800, Double(maxHeight))
        let shot = try await browser.send(
            "Page.captureScreenshot",
            [
                "format": .string("png"), "captureBeyondViewport": .bool(true),
                "clip": .object([
                    "x": .number(0), "y": .number(0), "width": .number(width), "height": .number(height), "scale": .number(1),
                ]),
            ], session: session)
        guard let text = shot["data"]?.stringValue, let data = Data(base64Encoded: text) else {
            throw VireoError(.internal, "DevTools: Page.captureScreenshot gave no image")
        }
        return data
    }

    /// `text` as a JavaScript string literal.
    public static func quoted(_ text: String) -> String {
        let data = (try? JSONEncoder().encode(JSONValue.string(text))) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
