//! Opening input files: only regular files, because opening a FIFO blocks until a writer comes
//! (forever, for a hostile `x.png`) and a device never ends.

use std::fs::{File, FileType};
use std::path::Path;

use crate::DataError;

/// Opens `path` for reading after checking, from its metadata (links followed), that it is a
/// regular file. The check comes first because `open` itself is what blocks on a FIFO.
pub(crate) fn open_regular_file(path: &Path) -> Result<File, DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_type = std::fs::metadata(path).map_err(io_error)?.file_type();
    if !file_type.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
            kind: describe(file_type),
        });
    }
    File::open(path).map_err(io_error)
}

/// What a file that is not regular is, for messages.
fn describe(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}
