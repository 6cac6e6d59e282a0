//! A stand-alone container shim for the runtime's tests: `kubelet-shim shim <spec.json>`, the
//! same convention as `kubelet-lite shim`, without the rest of the kubelet.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kubelet::runtime::shim::main(std::env::args().skip(2).collect())
}
