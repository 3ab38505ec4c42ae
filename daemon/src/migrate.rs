//! migrate.rs: `picosnitch migrate`: imports picosnitch 1/2 history databases (resumable, with a
//! progress bar) and turns a picosnitch 1 `config.json` into this version's `config.toml`.
use crate::paths::Paths;
use crate::store::import::{self, Kind, Source};
use crate::store::Store;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use toml::{Table, Value as Toml};

/// Skipped rows named one by one on standard error (the rest are only counted).
const SKIPS_NAMED: u64 = 20;

/// Runs `migrate` over every source; the database and config paths default to the system's.
pub fn run(sources: &[PathBuf], db: Option<PathBuf>, config_out: Option<PathBuf>) -> Result<()> {
    let paths = Paths::from_env();
    let db = db.unwrap_or(paths.db);
    let config_out = config_out.unwrap_or(paths.config);
    if sources.is_empty() {
        bail!("name at least one picosnitch config.json, snitch.db or picosnitch.db to import");
    }
    for src in sources {
        if is_json(src)? {
            let toml = convert_config(src)?;
            write_new(&config_out, &toml)?;
            eprintln!("{}: written as {}", src.display(), config_out.display());
        } else {
            import_db(src, &db)?;
        }
    }
    Ok(())
}

fn is_json(p: &Path) -> Result<bool> {
    let mut head = [0u8; 16];
    let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let n = std::os::unix::fs::FileExt::read_at(&f, &mut head, 0)
        .with_context(|| format!("cannot read {}", p.display()))?;
    Ok(head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'))
}

fn import_db(src: &Path, db: &Path) -> Result<()> {
    // A picosnitch 2 database where this version keeps its own: moved aside, then imported.
    let src = if same_file(src, db) {
        let aside = db.with_extension("db.picosnitch2");
        if aside.exists() {
            bail!(
                "{} is a picosnitch database and {} already exists: import that one instead",
                db.display(),
                aside.display()
            );
        }
        Source::open(src)?;
        std::fs::rename(src, &aside)
            .with_context(|| format!("cannot move {} aside", src.display()))?;
        for ext in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{ext}", src.display()));
            if side.exists() {
                let to = PathBuf::from(format!("{}{ext}", aside.display()));
                std::fs::rename(&side, &to)
                    .with_context(|| format!("cannot move {} aside", side.display()))?;
            }
        }
        eprintln!("{} moved to {}", src.display(), aside.display());
        aside
    } else {
        src.to_path_buf()
    };
    let source = Source::open(&src)?;
    let mut store = Store::open(db)?;
    let canonical = std::fs::canonicalize(&src).unwrap_or_else(|_| src.clone());
    let key = format!("import:{}", canonical.display());
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let name = match source.kind {
        Kind::V1 => "picosnitch 1",
        Kind::V2 => "picosnitch 2",
    };
    bar.set_message(format!("importing {} ({name})", src.display()));
    let mut named = 0;
    let progress = |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let skip = |rowid: i64, problem: &str| {
        named += 1;
        if named <= SKIPS_NAMED {
            bar.suspend(|| eprintln!("{}: row {rowid} skipped: {problem}", src.display()));
        }
    };
    let n = import::import(&mut store, &source, &key, progress, skip)?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} rows imported into {} ({name}), {} rows skipped",
        src.display(),
        n.written,
        db.display(),
        n.skipped
    );
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Creates `path` with `text`; never overwrites an existing file or follows a link.
fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (an existing config is never overwritten; name another with \
                 --config-out)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// picosnitch 1 `config.json` → `config.toml` text, validated by this version's loader.
pub fn convert_config(src: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(src).with_context(|| format!("cannot read {}", src.display()))?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", src.display()))?;
    let Value::Object(map) = json else {
        bail!("{}: expected a JSON object of settings", src.display());
    };
    let mut out = Table::new();
    let mut notes = Vec::new();
    for (k, v) in &map {
        match key_of(k) {
            Some((section, key)) => {
                if v.is_null() {
                    continue;
                }
                let value = toml_of(v).with_context(|| format!("{}: {k:?}", src.display()))?;
                let sec = out
                    .entry(section)
                    .or_insert_with(|| Toml::Table(Table::new()));
                if let Toml::Table(t) = sec {
                    t.insert(key.to_string(), value);
                }
            }
            None if k == "Log ignore" => split_ignore(v, &mut out)?,
            None => notes.push(k.clone()),
        }
    }
    let mut text = format!("# Imported from {}\n", src.display());
    for n in &notes {
        text.push_str(&format!("# not imported (no equivalent): {n:?}\n"));
    }
    text.push_str(&toml::to_string(&out).context("cannot write TOML")?);
    validate(src, &text)?;
    Ok(text)
}

/// The TOML section and key of a picosnitch 1 setting.
fn key_of(k: &str) -> Option<(&'static str, &'static str)> {
    Some(match k {
        "DB retention (days)" => ("database", "retention_days"),
        "DB sql log" => ("database", "enabled"),
        "DB text log" => ("database", "text_log"),
        "DB write limit (seconds)" => ("database", "write_limit_seconds"),
        "Desktop notifications" => ("desktop", "notifications"),
        "Every exe (not just conns)" => ("monitoring", "every_exe"),
        "Perf ring buffer (pages)" => ("monitoring", "perf_ring_buffer_pages"),
        "Set RLIMIT_NOFILE" => ("monitoring", "rlimit_nofile"),
        "Set st_dev mask" => ("monitoring", "st_dev_mask"),
        "Log addresses" => ("log", "addresses"),
        "Log commands" => ("log", "commands"),
        "Log ports" => ("log", "ports"),
        "VT API key" => ("virustotal", "api_key"),
        "VT file upload" => ("virustotal", "file_upload"),
        "VT request limit (seconds)" => ("virustotal", "request_limit_seconds"),
        _ => return None,
    })
}

fn toml_of(v: &Value) -> Result<Toml> {
    Ok(match v {
        Value::Bool(b) => Toml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Toml::Integer(i),
            None => bail!("expected a whole number, found {n}"),
        },
        Value::String(s) => Toml::String(s.clone()),
        other => bail!("expected a boolean, number or string, found {other}"),
    })
}

/// picosnitch 1 kept one mixed ignore list: hashes, ports, addresses/subnets and domains.
fn split_ignore(v: &Value, out: &mut Table) -> Result<()> {
    let Value::Array(items) = v else {
        bail!("\"Log ignore\": expected a list, found {v}");
    };
    let mut lists: [(&str, Vec<Toml>); 4] = [
        ("ignore_sha256", vec![]),
        ("ignore_ports", vec![]),
        ("ignore_ips", vec![]),
        ("ignore_domains", vec![]),
    ];
    for item in items {
        let (i, value) = match item {
            Value::Number(n) if n.as_i64().is_some() => (1, Toml::Integer(n.as_i64().unwrap_or(0))),
            Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                (0, Toml::String(s.to_ascii_lowercase()))
            }
            Value::String(s) if s.parse::<u16>().is_ok() => {
                (1, Toml::Integer(i64::from(s.parse::<u16>().unwrap_or(0))))
            }
            Value::String(s)
                if s.split('/')
                    .next()
                    .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok()) =>
            {
                (2, Toml::String(s.clone()))
            }
            Value::String(s) => (3, Toml::String(s.clone())),
            other => bail!("\"Log ignore\": cannot use entry {other}"),
        };
        lists[i].1.push(value);
    }
    let log = out
        .entry("log")
        .or_insert_with(|| Toml::Table(Table::new()));
    if let Toml::Table(t) = log {
        for (k, l) in lists {
            if !l.is_empty() {
                t.insert(k.to_string(), Toml::Array(l));
            }
        }
    }
    Ok(())
}

/// Loads the converted text with this version's config loader: an error names the key.
fn validate(src: &Path, text: &str) -> Result<()> {
    let loaded = crate::config::check_text(src, text)
        .map_err(|e| anyhow::anyhow!("the imported settings are not valid: {e}"))?;
    for w in loaded.warnings {
        eprintln!("note: {w}");
    }
    Ok(())
}
