//! `shoal image load|import|pull|ls|rm`: manage the local node's image store.
//!
//! These commands act on the store directly (`DATA_DIR/images`), not through the daemon: they
//! work with or without a running daemon and affect only this node. The store is safe to share
//! with a running daemon (index updates are locked, everything enters by atomic rename).
//!
//! Since no daemon is involved, a daemon address (`-H` or `SHOAL_HOST`) cannot say which store is
//! meant: with one, the commands refuse to run unless `--data-dir` names the store explicitly,
//! rather than quietly acting on this machine's default store (see [`check_target`]).

use anyhow::{bail, Context, Result};
use shoal_driver_oci::ImageStore;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// Load a `docker save` archive or an OCI image layout tarball (plain or gzip).
    Load {
        /// The archive (`-` or none with `-i`: stdin).
        file: Option<PathBuf>,
        /// The archive, as with `docker load -i`.
        #[arg(short = 'i', long = "input", conflicts_with = "file")]
        input: Option<PathBuf>,
        /// The name for images the archive does not name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a one-layer image from a rootfs tarball (like `docker import`).
    Import {
        /// The rootfs tarball (plain or gzip; `-`: stdin).
        rootfs: PathBuf,
        /// The image name (`:latest` when no tag).
        name: String,
    },
    /// Pull an image from a registry (anonymous).
    Pull {
        /// `registry/repo:tag` or `registry/repo@sha256:...`.
        reference: String,
        /// Use plain HTTP instead of HTTPS.
        #[arg(long)]
        insecure: bool,
    },
    /// List the images in this node's store.
    #[command(alias = "list")]
    Ls {
        /// `table` (default) or `json`.
        #[arg(long, default_value = "table")]
        format: String,
        /// Only the names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove an image (and the blobs and layers nothing else uses).
    #[command(alias = "remove")]
    Rm {
        /// The image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn open_input(path: Option<&Path>) -> Result<Box<dyn std::io::Read>> {
    match path {
        None => Ok(Box::new(std::io::stdin().lock())),
        Some(p) if p == Path::new("-") => Ok(Box::new(std::io::stdin().lock())),
        Some(p) => Ok(Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?)),
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Refuses a daemon address (`-H`/`--host` on the command line, or `SHOAL_HOST`) unless
/// `--data-dir` was given too: `shoal image` never talks to a daemon, so the address would be
/// ignored and the command would act on `data_dir` of *this* machine — possibly another daemon's
/// store than the one the address names. `matches` are the whole command line's; [`run`] checks.
pub fn check_target(matches: &clap::ArgMatches, host: &str, data_dir: &Path) -> Result<()> {
    use clap::parser::ValueSource;
    let named_by = match matches.value_source("host") {
        Some(ValueSource::CommandLine) => format!("-H {host}"),
        Some(ValueSource::EnvVariable) => format!("SHOAL_HOST={host}"),
        _ => return Ok(()),
    };
    let data_dir_given = matches
        .subcommand_matches("image")
        .and_then(|m| m.value_source("data_dir"))
        .is_some_and(|s| s == ValueSource::CommandLine);
    if data_dir_given {
        return Ok(());
    }
    bail!(
        "`shoal image` does not go through a daemon, so it cannot act on the one named by {named_by}: \
         it opens an image store directly, which here would be {store} on this machine \
         (--data-dir {dir}, the default). Run `shoal image` on the node whose store you mean, \
         with --data-dir set to that node's daemon --data-dir (e.g. `shoal image --data-dir {dir} ls`)",
        store = data_dir.join("images").display(),
        dir = data_dir.display(),
    )
}

pub fn run(data_dir: &Path, cmd: ImageCmd) -> Result<()> {
    // Whether -H and --data-dir were given or defaulted: the derived `Cli` cannot tell, its
    // matches can. The command line already parsed once, so this parse succeeds the same way.
    let matches = <crate::Cli as clap::CommandFactory>::command()
        .try_get_matches()
        .context("parsing the command line")?;
    let host = matches.get_one::<String>("host").map(String::as_str).unwrap_or_default();
    check_target(&matches, host, data_dir)?;
    let store = ImageStore::open(data_dir.join("images"))
        .with_context(|| format!("opening the image store in {}", data_dir.display()))?;
    match cmd {
        ImageCmd::Load { file, input, name } => {
            let src = input.or(file);
            let loaded = store.load(open_input(src.as_deref())?, name.as_deref())?;
            if loaded.is_empty() {
                bail!("the archive holds no image");
            }
            for r in loaded {
                println!("Loaded image: {} ({})", r.name, r.config_digest);
            }
        }
        ImageCmd::Import { rootfs, name } => {
            let r = store.import(open_input(Some(&rootfs))?, &name)?;
            println!("{}", r.config_digest);
        }
        ImageCmd::Pull { reference, insecure } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let r = rt.block_on(store.pull(&reference, insecure))?;
            println!("Pulled {} ({})", r.name, r.config_digest);
        }
        ImageCmd::Ls { format, quiet } => {
            let images = store.list()?;
            match (format.as_str(), quiet) {
                (_, true) => images.iter().for_each(|i| println!("{}", i.name)),
                ("json", false) => println!("{}", serde_json::to_string_pretty(&images)?),
                ("table", false) => {
                    println!("{:<48} {:<19} {:>10}", "NAME", "ID", "SIZE");
                    for i in &images {
                        let id: String =
                            i.config_digest.trim_start_matches("sha256:").chars().take(12).collect();
                        println!("{:<48} {:<19} {:>10}", i.name, id, human(i.size));
                    }
                }
                (f, false) => bail!("unknown format {f:?} (table or json)"),
            }
        }
        ImageCmd::Rm { names } => {
            for n in names {
                let r = store.remove(&n)?;
                println!("Deleted: {}", r.name);
            }
        }
    }
    Ok(())
}
