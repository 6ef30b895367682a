//! The oci driver: runs tasks from OCI images with `runc`.
//!
//! - [`store`]: the node's content-addressed image store (`<data_dir>/images`): `load`
//!   (docker-archive or OCI layout), `import` (rootfs tarball), `pull` (registry), `list`,
//!   `remove`, `resolve`.
//! - [`unpack`]: the safe layer unpacker (never writes outside its directory).
//! - [`driver`]: [`OciDriver`], the [`shoal_driver::Driver`] on top of runc.
//! - [`checkpoint`]: checkpoint directories (CRIU images + rootfs changes) and the signed archive
//!   that carries one to another node.

pub mod checkpoint;
pub mod checkpoint_stream;
mod exec_tty;
pub mod store;
pub mod unpack;

pub use store::{ImageRecord, ImageStore, ResolvedImage, StoreError};
pub use unpack::{UnpackError, UnpackLimits};
pub mod driver;

pub use driver::{OciDriver, OciDriverConfig};
