//! Compiles proto/kubelite/v1: the object types (types.proto) get Kubernetes-shaped serde
//! (camelCase names, empty fields omitted, unknown fields rejected: manifests are validated
//! strictly, like `kubectl --validate=strict`); the API service (api.proto) gets its tonic client
//! and server.
use std::fs;

fn main() {
    let types = "../../proto/kubelite/v1/types.proto";
    let api = "../../proto/kubelite/v1/api.proto";
    for p in [types, api] {
        println!("cargo:rerun-if-changed={p}");
    }
    // Serde only on the object types: the request/response messages never appear in manifests.
    let text = fs::read_to_string(types).expect("reading types.proto");
    let messages: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("message "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| format!(".kubelite.v1.{name}"))
        .collect();
    let mut config = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .btree_map(".")
        // Log chunks are relayed as they arrive, without a copy.
        .bytes(".kubelite.v1.LogChunk");
    for m in &messages {
        config = config
            .type_attribute(
                m,
                "#[derive(serde::Serialize, serde::Deserialize)] \
                 #[serde(rename_all = \"camelCase\", default, deny_unknown_fields)]",
            )
            .field_attribute(m, "#[serde(skip_serializing_if = \"crate::is_default\")]");
    }
    config
        // Kubernetes spells these with an upper-case acronym (and DaemonEndpoint's `Port` with a
        // capital, as upstream's json tag has it).
        .field_attribute(
            ".kubelite.v1.PodStatus.pod_ip",
            "#[serde(rename = \"podIP\")]",
        )
        .field_attribute(
            ".kubelite.v1.PodStatus.host_ip",
            "#[serde(rename = \"hostIP\")]",
        )
        .field_attribute(
            ".kubelite.v1.DaemonEndpoint.port",
            "#[serde(rename = \"Port\")]",
        )
        .field_attribute(
            ".kubelite.v1.NodeSystemInfo.machine_id",
            "#[serde(rename = \"machineID\")]",
        )
        .field_attribute(
            ".kubelite.v1.NodeSystemInfo.system_uuid",
            "#[serde(rename = \"systemUUID\")]",
        )
        .field_attribute(
            ".kubelite.v1.NodeSystemInfo.boot_id",
            "#[serde(rename = \"bootID\")]",
        )
        .compile_protos(&[types, api], &["../../proto"])
        .expect("compiling proto/kubelite/v1 (is protoc installed? scripts/setup installs it)");
}
