//! connlog.rs: `conn.log`, every stored row as a CSV line with picosnitch 2's 25 fields
//! (`[database] text_log`), appended the way every root-written log is (see logfile.rs).
use crate::config::DataAccess;
use crate::model::{ExeIdent, Row};
use crate::notify::exelog::{local_time, ExeLog};
use std::io;
use std::path::PathBuf;

pub struct ConnLog {
    out: ExeLog,
}

impl ConnLog {
    /// `access`: the `[data]` owner, group and mode.
    pub fn new(path: PathBuf, access: DataAccess) -> Self {
        ConnLog {
            out: ExeLog::new(path, access),
        }
    }

    /// Appends one line per row.
    pub fn append(&mut self, rows: &[Row]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let text = csv_lines(rows)?;
        self.out.append(text.trim_end_matches('\n'))
    }

    pub fn path(&self) -> &std::path::Path {
        self.out.path()
    }
}

/// The CSV lines of `rows`: entry time, sent, received, events, then executable, name, cmdline
/// and sha256 of the process, its parent and grandparent, uid, family, protocol, local port,
/// remote port, local address, remote address, domain, network namespace.
pub fn csv_lines(rows: &[Row]) -> io::Result<String> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let level = |e: &ExeIdent| {
        [
            e.exe.clone(),
            e.name.clone(),
            e.cmdline.clone(),
            e.sha256.clone(),
        ]
    };
    for r in rows {
        let k = &r.key;
        let mut rec = vec![
            local_time(r.contime),
            r.send.to_string(),
            r.recv.to_string(),
            r.events.to_string(),
        ];
        rec.extend(level(&k.exe));
        rec.extend(level(&k.parent));
        rec.extend(level(&k.grandparent));
        rec.extend([
            k.uid.to_string(),
            k.family.to_string(),
            k.protocol.to_string(),
            k.lport.to_string(),
            k.rport.to_string(),
            k.laddr.clone(),
            k.raddr.clone(),
            k.domain.clone(),
            k.netns.to_string(),
        ]);
        w.write_record(&rec).map_err(io::Error::other)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| io::Error::other(e.to_string()))?;
    String::from_utf8(bytes).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RowKey;
    use std::sync::Arc;

    #[test]
    fn twenty_five_fields_quoted_as_csv() {
        let e = Arc::new(ExeIdent {
            exe: "/usr/bin/curl".into(),
            name: "curl".into(),
            cmdline: "curl -H \"a, b\" https://x".into(),
            sha256: "ab".into(),
        });
        let row = Row {
            contime: 0,
            send: 1,
            recv: 2,
            events: 3,
            key: RowKey {
                exe: e.clone(),
                parent: e.clone(),
                grandparent: Arc::new(ExeIdent::default()),
                uid: 1000,
                family: 2,
                protocol: 6,
                lport: 5,
                rport: 443,
                laddr: "10.0.0.1".into(),
                raddr: "1.1.1.1".into(),
                domain: "com.example".into(),
                netns: 7,
                container: String::new(),
            },
        };
        let text = csv_lines(&[row]).unwrap();
        let mut rd = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let rec = rd.records().next().unwrap().unwrap();
        assert_eq!(rec.len(), 25);
        assert_eq!(&rec[6], "curl -H \"a, b\" https://x");
        assert_eq!(&rec[23], "com.example");
        assert_eq!(&rec[24], "7");
    }
}
