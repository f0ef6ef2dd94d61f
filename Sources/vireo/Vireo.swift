import ArgumentParser
import Foundation
import VireoAPI
import VireoModel

struct Vireo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireo",
        abstract: "Manage virtual machines across hypervisors, placed by how their applications meet their SLOs.",
        discussion: """
            Start everything on this machine with `vireo up`, then use the other commands against it.

            Exit codes: 0 ok, 1 operation failed, 2 usage error or invalid input, 3 not found, \
            4 conflict, 5 controller unreachable.
            """,
        version: VireoVersion.current,
        subcommands: [
            Up.self, ControllerCommand.self, AgentCommand.self, HostCommand.self, VMCommand.self, AppCommand.self,
            SLOCommand.self, AlertCommand.self, PackCommand.self, Apply.self,
            Migrate.self, MigrationCommand.self, ImageCommand.self, ImportCommand.self, EventsCommand.self, TestbedCommand.self,
            PlanCommand.self, RebalanceCommand.self, ContextCommandGroup.self, DriverCommand.self, TokenCommand.self,
            AuditCommand.self, DemoCommand.self, ChaosCommand.self,
            BenchCommand.self,
            SimCommand.self,
        ]
    )
}

/// Entry point: runs the command and maps every failure to the documented exit codes.
@main
enum Main {
    static func main() async {
        do {
            var command = try Vireo.parseAsRoot(ClientOptions.movingLeadingOptions(Array(CommandLine.arguments.dropFirst())))
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as VireoError {
            FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
            exit(ExitStatus.code(for: error.code))
        } catch let error as ExitCode {
            exit(error.rawValue)
        } catch {
            let code = Vireo.exitCode(for: error)
            let message = Vireo.fullMessage(for: error)
            if code == .success {
                print(message)
                exit(0)
            }
            FileHandle.standardError.write(Data((message + "\n").utf8))
            // ArgumentParser reports usage errors as 64; Vireo documents 2.
            exit(code == .validationFailure ? ExitStatus.usage : ExitStatus.failed)
        }
    }
}

enum ExitStatus {
    static let failed: Int32 = 1
    static let usage: Int32 = 2
    static let notFound: Int32 = 3
    static let conflict: Int32 = 4
    static let unreachable: Int32 = 5

    static func code(for code: VireoError.Code) -> Int32 {
        switch code {
        case .invalidArgument, .payloadTooLarge: usage
        case .notFound: notFound
        case .conflict: conflict
        case .unavailable: unreachable
        default: failed
        }
    }
}
