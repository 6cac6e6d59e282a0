//! Writing PEM files safely: atomically, and with private keys readable by their owner only.

use std::{
    fs,
    io::{self, Write},
    path::Path,
};

use crate::PkiError;

/// Mode of private keys: a key readable by other users is a leaked identity.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificates, which are public.
pub(crate) const CERT_MODE: u32 = 0o644;

/// Writes `contents` to `path` through a temporary file in the same directory and a rename, so
/// that a crash never leaves a half-written key behind, and a reader (a running member reloading
/// its certificate) sees either the old file or the new one. The mode is set on the temporary
/// file before any byte is written, so a key is never briefly world-readable.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_err = |source: io::Error| PkiError::Io {
        action: "writing",
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        let mut file = options.open(&tmp)?;
        // `mode` above is filtered by the umask and ignored if the file already existed.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        action: "creating directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Reads a whole text file, or `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}
