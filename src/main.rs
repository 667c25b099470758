fn main() -> std::process::ExitCode {
    journald_kafka::main()
}
