//! Filesystem steps of the file sink, with errors that name the path.

use std::fs::File;
use std::io;
use std::path::Path;

use sluice_types::ConnectorError;

pub(super) fn create_parent(path: &Path) -> Result<(), ConnectorError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ConnectorError::Io {
            what: "creating the directory of sink file",
            path: parent.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

pub(super) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ConnectorError + 'a {
    move |source| ConnectorError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Make the creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the directory of sink file", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(super) fn remove_if_exists(path: &Path) -> Result<(), ConnectorError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("deleting", path)(e)),
        _ => Ok(()),
    }
}
