fn main() {
    println!("cargo:rerun-if-changed=../../proto/raft.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["../../proto/raft.proto"], &["../../proto"])
        .expect("compiling proto/raft.proto (is protoc installed? scripts/setup installs it)");
}
