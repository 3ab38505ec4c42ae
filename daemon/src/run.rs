//! run.rs: starting the monitor in the foreground: config, logging, collector, store, signals.
use crate::collector::{Collector, CollectorError, Options};
use crate::identity::fanotify::Watcher;
use crate::identity::{exe_cache, Identity};
use crate::notify::exelog::ExeLog;
use crate::notify::Notifier;
use crate::paths::Paths;
use crate::pipeline::Pipeline;
use crate::sink::Sink;
use crate::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit statuses the service unit lists in RestartPreventExitStatus (sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
pub const EXIT_NOPERM: u8 = 77;
pub const EXIT_UNAVAILABLE: u8 = 69;
pub const EXIT_CANTCREAT: u8 = 73;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PICOSNITCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

pub fn start_no_daemon(config: Option<PathBuf>) -> ExitCode {
    init_logging();
    let paths = Paths::from_env();
    let (cfg_path, must_exist) = match config {
        Some(p) => (p, true),
        None => (paths.config.clone(), false),
    };
    let loaded = match crate::config::load(&cfg_path, must_exist) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("picosnitch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    let opts = Options {
        totals_capacity: cfg.monitoring.conn_map_max_entries,
        // picosnitch's setting is pages per CPU; the ring buffer is shared by all CPUs.
        ring_bytes: cfg
            .monitoring
            .perf_ring_buffer_pages
            .saturating_mul(4096)
            .saturating_mul(std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        hook_set: cfg.monitoring.only_hook_set(),
    };
    let collector = match Collector::start(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("picosnitch: {e}");
            return ExitCode::from(match e {
                CollectorError::NotPrivileged => EXIT_NOPERM,
                _ => EXIT_UNAVAILABLE,
            });
        }
    };
    // Like auditd: a monitor that falls behind under load misses short-lived processes.
    // SAFETY: setpriority on the calling process has no memory-safety preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0 {
        tracing::info!(
            "cannot raise scheduling priority: {}",
            std::io::Error::last_os_error()
        );
    }
    for (set, why) in &collector.attached.refused {
        tracing::info!("hook set {set} refused: {why}");
    }
    for why in &collector.attached.skipped {
        tracing::info!("optional hook not available on this kernel: {why}");
    }
    let mut store = match Store::open(&paths.db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("picosnitch: {e}");
            return ExitCode::from(EXIT_CANTCREAT);
        }
    };
    // What this run attached, for `status` and for reading old rows in context.
    let facts = [
        ("kernel", crate::collector::kernel::release()),
        ("hook_set", collector.attached.hook_set.to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    for (k, v) in facts {
        if let Err(e) = store.set_meta(k, &v) {
            eprintln!("picosnitch: {e}");
            return ExitCode::from(EXIT_CANTCREAT);
        }
    }
    let mask = cfg
        .monitoring
        .st_dev_mask
        .unwrap_or_else(exe_cache::auto_dev_mask);
    let mut cache = exe_cache::ExeCache::new(4096, mask);
    let watcher = match Watcher::new() {
        Ok(w) => {
            let w = Arc::new(w);
            cache = cache.with_watcher(w.clone());
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                "fanotify is unavailable, modified executables are found only by size and mtime: {e}"
            );
            None
        }
    };
    let identity = Identity::with_cache(cache);
    let mut notifier = Notifier::new(ExeLog::new(paths.exe_log.clone()));
    if cfg.desktop.notifications {
        match crate::notify::desktop::Desktop::spawn(crate::notify::desktop::Throttle::default()) {
            Ok(desktop) => notifier = notifier.with_desktop(desktop),
            Err(e) => {
                tracing::warn!("desktop notifications are off: cannot start their thread: {e}")
            }
        }
    }
    let db = store.path().display().to_string();
    let sink = match Sink::start(
        store,
        identity.cache.clone(),
        notifier,
        crate::sink::Options {
            retention_days: cfg.database.retention_days,
            conn_log: cfg
                .database
                .text_log
                .then(|| crate::connlog::ConnLog::new(paths.conn_log.clone())),
            filter: crate::filter::Filter::new(crate::filter::Rules::default()),
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("picosnitch: cannot start the database writer: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let hook_set = collector.attached.hook_set;
    let pipeline =
        Pipeline::new(collector, identity, sink, watcher).with_every_exe(cfg.monitoring.every_exe);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("picosnitch: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_UNAVAILABLE);
        }
    };
    let write_every = Duration::from_secs(u64::from(cfg.database.write_limit_seconds));
    let result = rt.block_on(async {
        // Handlers are installed before readiness is announced, so no signal is missed.
        let stop = Shutdown::install()?;
        tracing::info!(
            hook_set,
            db,
            "picosnitch is monitoring (hook set {hook_set})"
        );
        pipeline.run(write_every, stop.wait()).await
    });
    match result {
        Ok(()) => {
            tracing::info!("picosnitch stopped; everything was written");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("picosnitch: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: writing the open window"),
            _ = self.int.recv() => tracing::info!("SIGINT: writing the open window"),
        }
    }
}
