import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoModel

struct VMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm", abstract: "Create, list, inspect, start, stop and delete VMs.",
        subcommands: [VMCreate.self, VMList.self, VMShow.self, VMStart.self, VMStop.self, VMDelete.self, VMLogs.self])
}

/// `--wait` and `--timeout`, shared by the commands that change a VM's state.
struct WaitOptions: ParsableArguments {
    @Flag(help: "Wait until the VM reaches the requested state, showing its progress.")
    var wait = false

    @Option(help: ArgumentHelp("Give up waiting after this many seconds.", valueName: "seconds"))
    var timeout: Double = 120

    /// Polls the VM until `done` says so, printing each state change on standard error.
    /// Returns the last view; throws when the VM fails or the time is up.
    func waitFor(
        _ vm: VMView, client: VireoClient, until done: @escaping (VMView?) -> Bool
    ) async throws -> VMView? {
        guard wait else { return vm }
        let start = ContinuousClock.now
        var last: VMView? = vm
        stderr("\(vm.name): \(vm.state.rawValue)")
        while true {
            if done(last) { return last }
            if let last, last.state == .failed {
                throw VireoError(.failedPrecondition, "VM '\(last.name)' failed: \(last.message ?? "no reason given")")
            }
            if ContinuousClock.now - start > .seconds(timeout) {
                throw VireoError(.unavailable, "timed out after \(Int(timeout)) s waiting for VM '\(vm.name)'")
            }
            try await Task.sleep(for: .milliseconds(100))
            let current: VMView?
            do {
                current = try await client.vm(vm.id.rawValue)
            } catch let error as VireoError where error.code == .notFound {
                current = nil
            }
            if current?.state != last?.state {
                let elapsed = String(format: "%.1f s", (ContinuousClock.now - start).secondsValue)
                stderr(
                    "\(vm.name): \(current?.state.rawValue ?? "deleted") (\(elapsed))\(current?.message.map { " — \($0)" } ?? "")"
                )
            }
            last = current
        }
    }
}

struct VMCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a VM and start it on the best host.",
        discussion: "Example: vireo vm create web-1 --image tiny --cpus 1 --memory 256MiB --wait")

    @Argument(help: "VM name: lowercase letters, digits and '-', at most 63 characters.") var name: String
    @Option(help: "Guest image (see `vireo image list`).") var image: String = "tiny"
    @Option(help: "Virtual CPUs.") var cpus: Int = 1
    @Option(help: ArgumentHelp("Memory, e.g. 256MiB or 1GiB.", valueName: "size")) var memory: String = "128MiB"
    @Option(
        help: ArgumentHelp(
            "Disk size as the guest sees it, e.g. 1GiB (default: the image's 64MiB; kept thin).", valueName: "size"))
    var disk: String?
    @Option(help: ArgumentHelp("Pin the VM to this host.", valueName: "host")) var host: String?
    @Option(help: ArgumentHelp("The application the VM belongs to.", valueName: "app")) var app: String?
    @Option(
        help: ArgumentHelp(
            "When its host is lost: never (it waits for the host) or always (it starts on another host once the lost "
                + "host has fenced itself; with its disk where the hosts share storage, else from a fresh disk of its "
                + "image). Default: never.", valueName: "policy"))
    var restartPolicy: String?
    @OptionGroup var waiting: WaitOptions
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let api = client.client()
        var body: [String: JSONValue] = [
            "name": .string(name), "image": .string(image), "cpus": .number(Double(cpus)),
            "memory": .string(ByteSize.apiForm(memory)),
        ]
        if let host { body["host"] = .string(host) }
        if let app { body["app"] = .string(app) }
        if let disk { body["disk"] = .string(ByteSize.apiForm(disk)) }
        if let restartPolicy { body["restartPolicy"] = .string(restartPolicy) }
        let created = try await api.createVM(body)
        let vm = try await waiting.waitFor(created, client: api) { $0?.state == .running } ?? created
        if output.output == .json { return try printJSON(vm) }
        print("vm \(vm.name) \(vm.state.rawValue)\(vm.host.map { " on \($0)" } ?? "")\(vm.message.map { ": \($0)" } ?? "")")
    }
}

struct VMList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List VMs.")
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let vms = try await client.client().allVMs()
        if output.output == .json { return try printJSON(vms) }
        printTable(
            ["NAME", "STATE", "HOST", "ADDRESS", "IMAGE", "CPUS", "MEMORY", "APP", "AGE"],
            vms.map {
                [
                    $0.name, $0.state.rawValue, $0.host ?? "-", $0.address ?? "-", $0.image, String($0.cpus),
                    ByteSize.format(mib: $0.memoryMiB),
                    $0.app ?? "-", age(since: $0.createdAt),
                ]
            })
    }
}

struct VMShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a VM, with the reasons it runs where it does.")
    @Argument(help: "VM name or ID.") var vm: String
    @OptionGroup var client: ClientOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let vm = try await client.client().vm(vm)
        if output.output == .json { return try printJSON(vm) }
        let rows: [(String, String)] = [
            ("Name", vm.name), ("ID", vm.id.rawValue),
            ("State", "\(vm.state.rawValue) (for \(age(since: vm.stateChangedAt)))"),
            ("Wanted", vm.intent.rawValue), ("Host", vm.host ?? "-"), ("Address", vm.address ?? "-"),
            ("Pinned to", vm.pinnedHost ?? "-"), ("Restart", vm.restartPolicy?.rawValue ?? RestartPolicy.never.rawValue),
            ("Image", vm.image), ("CPUs", String(vm.cpus)), ("Memory", ByteSize.format(mib: vm.memoryMiB)),
            ("Disk", ByteSize.format(mib: vm.diskMiB ?? ImageCatalogue.virtualDiskMiB)),
            ("App", vm.app ?? "-"), ("Message", vm.message ?? "-"),
            ("Created", "\(vm.createdAt) (\(age(since: vm.createdAt)) ago)"),
        ]
        for (key, value) in rows { print("\((key + ":").padding(toLength: 11, withPad: " ", startingAt: 0)) \(value)") }
        if let moves = vm.liveMoves, !moves.isEmpty {
            print("\nLive moves from \(vm.host ?? "-"):")
            printTable(["HOST", "VERDICT"], moves.map { [$0.hostName, $0.filtered == nil ? "can take it" : $0.summary] })
        }
        guard let placement = vm.placement else { return }
        print("\nPlacement (\(placement.chosenHost.map { "chose \($0)" } ?? "no host fits") at \(placement.decidedAt)):")
        printTable(
            ["HOST", "VERDICT"],
            placement.verdicts.map { v in
                [v.hostName, (v.hostName == placement.chosenHost ? "chosen — " : "") + v.summary]
            })
        if !placement.omitted.isEmpty {
            let counts = placement.omitted.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }
            print("(\(placement.omitted.values.reduce(0, +)) more hosts not shown: \(counts.joined(separator: ", ")))")
        }
    }
}

struct VMStart: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Start a stopped or failed VM.")
    @Argument(help: "VM name or ID.") var vm: String
    @OptionGroup var waiting: WaitOptions
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let api = client.client()
        let vm = try await api.startVM(vm)
        let final = try await waiting.waitFor(vm, client: api) { $0?.state == .running }
        print("vm \(vm.name) \(final?.state.rawValue ?? vm.state.rawValue)")
    }
}

struct VMStop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop a VM (its disk is kept).")
    @Argument(help: "VM name or ID.") var vm: String
    @OptionGroup var waiting: WaitOptions
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let api = client.client()
        let vm = try await api.stopVM(vm)
        let final = try await waiting.waitFor(vm, client: api) { $0?.state == .stopped }
        print("vm \(vm.name) \(final?.state.rawValue ?? vm.state.rawValue)")
    }
}

struct VMDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Stop a VM and remove it with its disk.")
    @Argument(help: "VM name or ID.") var vm: String
    @OptionGroup var waiting: WaitOptions
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let api = client.client()
        let vm = try await api.deleteVM(vm)
        let final = try await waiting.waitFor(vm, client: api) { $0 == nil }
        print("vm \(vm.name) \(final == nil && waiting.wait ? "deleted" : vm.state.rawValue)")
    }
}

struct VMLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Show a VM's serial console output.",
        discussion: """
            The controller keeps the last 256 KiB of each VM's console; agents send new output with their \
            heartbeats, so it shows up about a second after the guest prints it. With --follow, new output is \
            fetched every second until Ctrl-C or until the VM is deleted.
            """)
    @Argument(help: "VM name or ID.") var vm: String
    @Flag(name: .shortAndLong, help: "Keep printing new output as it arrives.") var follow = false
    @Option(help: ArgumentHelp("Show only the last N lines.", valueName: "n")) var tail: Int?
    @OptionGroup var client: ClientOptions

    func validate() throws {
        if let tail, tail < 0 { throw ValidationError("--tail: must be 0 or more (got \(tail))") }
    }

    func run() async throws {
        let api = client.client()
        var (text, position) = try await api.vmLogs(vm, tail: tail)
        write(text)
        if text.isEmpty, tail != 0 {
            let state = try await api.vm(vm).state
            stderr("VM '\(vm)' has no console output yet (it is \(state.rawValue))")
        }
        guard follow else { return }
        stderr("following the console of '\(vm)' (Ctrl-C stops)")
        while true {
            try await Task.sleep(for: .seconds(1))
            do {
                (text, position) = try await api.vmLogs(vm, after: position)
            } catch let error as VireoError where error.code == .notFound {
                stderr("VM '\(vm)' was deleted")
                return
            }
            write(text)
        }
    }

    private func write(_ text: String) {
        guard !text.isEmpty else { return }
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}
