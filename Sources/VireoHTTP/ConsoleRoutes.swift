import Foundation
import Hummingbird
import VireoModel

/// The web console: a page and its script and style, compiled into the binary from `Embedded/`,
/// and the browser libraries it uses, read from Debian's `libjs-*` packages. The console is a
/// client of the public API only; these routes hand out files, never data.
public struct ConsoleFiles: Sendable {
    /// Where Debian installs browser libraries.
    public var javascriptDirectory: String
    /// Where Debian's `novnc` installs noVNC, which shows contexts' displays.
    public var novncDirectory: String

    public init(javascriptDirectory: String = "/usr/share/javascript", novncDirectory: String = "/usr/share/novnc") {
        self.javascriptDirectory = javascriptDirectory
        self.novncDirectory = novncDirectory
    }

    /// The libraries the console loads, by the name it asks for: the file under
    /// `javascriptDirectory` and the Debian package that installs it.
    static let libraries: [String: (path: String, package: String)] = [
        "chart.js": ("chart.js/chart.min.js", "libjs-chart.js")
    ]

    /// Paths the token check lets through: the files carry no data, and the page must load to
    /// ask for a token.
    static func isPublic(_ path: String) -> Bool {
        path == "/" || path == "/console/console.js" || path == "/console/console.css" || path.hasPrefix("/console/lib/")
            || path.hasPrefix("/console/novnc/")
    }
}

extension VireoServer {
    func addConsoleRoutes(_ router: Router<VireoRequestContext>) {
        let page = ByteBuffer(string: Embedded.indexHtml)
        let script = ByteBuffer(string: Embedded.consoleJs)
        let style = ByteBuffer(string: Embedded.consoleCss)
        router.get("/") { _, _ in Self.file(page, type: "text/html; charset=utf-8") }
        router.get("/console/console.js") { _, _ in Self.file(script, type: "text/javascript; charset=utf-8") }
        router.get("/console/console.css") { _, _ in Self.file(style, type: "text/css; charset=utf-8") }
        let directory = consoleFiles.javascriptDirectory
        router.get("/console/lib/{library}") { _, context in
            let name = try context.parameters.require("library")
            guard let library = ConsoleFiles.libraries[name] else { throw VireoError.notFound("console library", name) }
            let path = (directory as NSString).appendingPathComponent(library.path)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw VireoError(
                    .notFound, "console library \(name): \(path) is missing; install Debian's \(library.package)")
            }
            return Self.file(ByteBuffer(data: data), type: "text/javascript; charset=utf-8")
        }
        // noVNC's modules (core/rfb.js and what it imports), from Debian's novnc: scripts only.
        let novnc = consoleFiles.novncDirectory
        router.get("/console/novnc/**") { _, context in
            let parts = context.parameters.getCatchAll()
            let relative = parts.joined(separator: "/")
            // No hidden file, no way up or across (a component decoded from %2F could hold a slash).
            let plain = parts.allSatisfy { !$0.isEmpty && !$0.hasPrefix(".") && !$0.contains("/") && !$0.contains("..") }
            guard !parts.isEmpty, plain, relative.hasSuffix(".js") else {
                throw VireoError.notFound("noVNC file", relative)
            }
            guard let data = FileManager.default.contents(atPath: novnc + "/" + relative) else {
                throw VireoError(.notFound, "noVNC file \(relative): not in \(novnc); install Debian's novnc")
            }
            return Self.file(ByteBuffer(data: data), type: "text/javascript; charset=utf-8")
        }
    }

    static func file(_ body: ByteBuffer, type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "no-cache"], body: ResponseBody(byteBuffer: body))
    }
}
