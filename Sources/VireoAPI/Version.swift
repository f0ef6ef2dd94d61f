public enum VireoVersion {
    public static let current = "0.1.0"
}
