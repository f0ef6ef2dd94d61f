import Foundation
import Hummingbird
import HummingbirdTesting
import Prometheus
import Testing
import VireoAPI
import VireoAgent
import VireoBrowser
import VireoController
import VireoDriverQEMU
import VireoHTTP
import VireoModel
import VireoStore

extension RealQEMU {
    /// A context's display in the web console: a real QEMU guest's VNC server, bridged by the
    /// controller's WebSocket endpoint, drawn by noVNC in headless Chromium.
    @Suite("Web console: a context's display (real QEMU, headless Chromium)", .serialized, .tags(.browser))
    struct ConsoleDisplayQEMUTests {
        @Test("the console shows a running context's display through the controller; a host it cannot reach is named")
        func display() async throws {
            let directory = temporaryDirectory()
            let driver = TestQEMU.driver(stateDirectory: directory + "/vms")
            let contexts = try ContextQEMUTests.manager(directory: directory, driver: driver)
            let controller = try await Controller.open(store: try SQLiteStore(), settings: .fast)
            let loops = controllerLoops(controller)
            let agent = Agent(
                settings: .init(name: "desk", heartbeatInterval: .milliseconds(50)), driver: driver, link: controller,
                contexts: contexts)
            let running = Task { try await agent.run() }
            defer {
                running.cancel()
                loops.cancel()
            }
            try await eventually("desk registered") { await controller.listHosts().items.first?.state == .ready }
            _ = try await controller.openContext(
                ContextOpenRequest(
                    spec: ContextSpec(
                        name: "work", kind: .persistent, image: "web", cpus: 1, memoryMiB: 128, network: .isolated,
                        display: .vnc),
                    wait: true))
            try await eventually("work running with its display", within: 60) {
                let work = try await controller.context("work", host: nil)
                return work.state == .running && work.display != nil
            }
            defer { Task { _ = try? await controller.closeContext("work", host: nil) } }

            // A controller on another machine than the host: it says where the display is instead.
            let elsewhere = VireoServer(controller: controller, tokens: nil, registry: PrometheusCollectorRegistry())
            try await Application(router: elsewhere.router()).test(.router) { client in
                let answer = try await client.request(.get, "/v1/contexts/work/display")
                #expect(answer.status == 412)
                #expect(expectEnvelope(answer.body, code: .failedPrecondition).contains("host desk's loopback"))
            }

            let server = VireoServer(
                controller: controller, tokens: nil, registry: PrometheusCollectorRegistry(), displayHosts: ["desk"])
            try await withServedConsole(server) { base, browser in
                let page = try await browser.newPage()
                try await page.navigate(base + "/#/contexts")
                try await page.waitFor("document.querySelector('tr[data-context=work] button[data-action=display]')", "offered")
                try await page.click("tr[data-context=work] button[data-action=display]")
                try await page.waitFor(
                    "document.getElementById('display-panel')?.dataset.state === 'connected'", within: 30,
                    "noVNC connected through the controller")
                // The guest's screen arrives: noVNC sizes its canvas to the display's.
                try await page.waitFor(
                    "(document.querySelector('#display-panel canvas')?.width ?? 0) >= 640", within: 30, "the screen drawn")
                let desktop = try await page.evaluate("document.getElementById('display-panel').dataset.desktop")
                #expect(desktop.stringValue?.hasPrefix("QEMU") == true, "the VNC server's desktop name: \(desktop)")
                try await Task.sleep(for: .seconds(1))
                try await page.screenshot().write(
                    to: URL(fileURLWithPath: "\(BrowserConsoleTests.screenshots)/context-display.png"))
                try await page.click("#display-panel button")
                try await page.waitFor("document.getElementById('display-panel').hidden", "the display closed")
            }
            _ = try await controller.closeContext("work", host: nil)
        }
    }
}
