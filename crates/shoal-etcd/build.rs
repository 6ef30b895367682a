//! Compiles etcd 3.4's protos (in `proto/`, see `proto/README.md`) with protox: pure Rust, no
//! system `protoc` needed. The descriptor set is also written to `OUT_DIR` for the JSON gateway
//! (`src/jsonpb.rs`), which walks fields by descriptor the way Go's jsonpb walks struct tags.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/etcd/etcdserver/etcdserverpb/rpc.proto",
        "proto/etcd/mvcc/mvccpb/kv.proto",
        "proto/etcd/auth/authpb/auth.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("etcd_descriptors.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
