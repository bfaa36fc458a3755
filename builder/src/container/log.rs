//! A container's log, `containers/<id>/container.log`: docker's json-file lines, each line of
//! output with its stream and the time it was read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Result, io_err};

/// One line of output, as docker's json-file driver writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The text with its newline (none on a last line that had none).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// The log file, shared by the two streams' readers.
pub type Sink = Arc<Mutex<File>>;

/// Opens (creates) the log for appending.
pub fn open(path: &Path) -> Result<Sink> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))?;
    Ok(Arc::new(Mutex::new(f)))
}

/// Copies `from` into the log line by line as `stream`, until its end; each line also goes to
/// `echo` when given (a foreground container's terminal). A line is capped at 16 KiB as
/// docker's are: a longer one is split.
pub fn pump(from: impl Read, stream: &str, sink: &Sink, mut echo: Option<File>) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader).take(16 * 1024).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(e) = echo.as_mut() {
            let _ = e.write_all(&buf[..n]);
        }
        let line = Line {
            log: String::from_utf8_lossy(&buf[..n]).into_owned(),
            stream: stream.to_owned(),
            time: jiff::Timestamp::now().to_string(),
        };
        if let Ok(mut json) = serde_json::to_vec(&line) {
            json.push(b'\n');
            if let Ok(mut f) = sink.lock() {
                let _ = f.write_all(&json);
            }
        }
    }
}

/// The lines of the log from byte `offset` on, and the offset after the last whole line (a
/// line being written is left for the next read).
pub fn read_from(path: &Path, offset: u64) -> Result<(Vec<Line>, u64)> {
    use std::io::Seek as _;
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(io_err("read", path))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = bytes[..whole]
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    Ok((lines, offset + whole as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_stream_and_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sink = open(&path).unwrap();
        pump(&b"one\ntwo"[..], "stdout", &sink, None);
        pump(&b"err\n"[..], "stderr", &sink, None);
        let (lines, end) = read_from(&path, 0).unwrap();
        let got: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.log.as_str(), l.stream.as_str()))
            .collect();
        assert_eq!(
            got,
            [("one\n", "stdout"), ("two", "stdout"), ("err\n", "stderr")]
        );
        assert_eq!(read_from(&path, end).unwrap().0, []);
    }
}
