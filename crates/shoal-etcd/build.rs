//! Compiles etcd 3.4's protos (in `proto/`, see `proto/README.md`) with protox: pure Rust, no
//! system `protoc` needed.

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
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
