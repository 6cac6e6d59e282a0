//! Compiles proto/kubelite/v1 into plain message types (no gRPC services: those come with the
//! apiserver) and gives them Kubernetes-shaped serde: camelCase names, empty fields omitted,
//! unknown fields rejected (manifests are validated strictly, like `kubectl --validate=strict`).
fn main() {
    let protos = ["../../proto/kubelite/v1/types.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .btree_map(".")
        .type_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] \
             #[serde(rename_all = \"camelCase\", default, deny_unknown_fields)]",
        )
        .field_attribute(".", "#[serde(skip_serializing_if = \"crate::is_default\")]")
        // Kubernetes spells these with an upper-case acronym.
        .field_attribute(
            ".kubelite.v1.PodStatus.pod_ip",
            "#[serde(rename = \"podIP\")]",
        )
        .field_attribute(
            ".kubelite.v1.PodStatus.host_ip",
            "#[serde(rename = \"hostIP\")]",
        )
        .compile_protos(&protos, &["../../proto"])
        .expect("compiling proto/kubelite/v1 (is protoc installed? scripts/setup installs it)");
}
