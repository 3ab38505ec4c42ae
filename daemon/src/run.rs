//! run.rs: starting the monitor in the foreground: config, logging, collector, pidfile, API
//! sockets, store, notifier, then the main loop until SIGTERM/SIGINT.
use crate::collector::{Collector, CollectorError, Options};
use crate::config::DataAccess;
use crate::identity::fanotify::Watcher;
use crate::identity::{exe_cache, Identity};
use crate::logfile::{self, AppendLog};
use crate::logging::{self, errorlog};
use crate::notify::exelog::ExeLog;
use crate::notify::Notifier;
use crate::paths::Paths;
use crate::pipeline::Pipeline;
use crate::service::manager::Manager;
use crate::service::pidfile::{PidFile, PidFileError};
use crate::service::signals::Signals;
use crate::service::{self, Fallback, Heartbeat};
use crate::sink::Sink;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit statuses (sysexits.h); the unit lists the permanent ones in RestartPreventExitStatus.
pub const EXIT_CONFIG: u8 = 78;
pub const EXIT_NOPERM: u8 = 77;
pub const EXIT_UNAVAILABLE: u8 = 69;
pub const EXIT_CANTCREAT: u8 = 73;
/// Another daemon holds the pidfile lock (listed in RestartPreventExitStatus too: only root can
/// take that lock, so it is another daemon, and restarting cannot help).
pub const EXIT_TEMPFAIL: u8 = 75;

/// Logs why the daemon cannot run (journald or stderr, and error.log) and gives its status.
fn fatal(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    tracing::error!("{msg}");
    ExitCode::from(code)
}

pub fn start_no_daemon(config: Option<PathBuf>) -> ExitCode {
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
    let data = loaded.data;
    let target = logging::init(Some(AppendLog::new(paths.error_log.clone(), data)));
    tracing::debug!(?target, "logging");
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    // One daemon per state directory, decided before any eBPF program is loaded; held until the
    // process exits.
    let _pidfile = match PidFile::acquire(&paths.pidfile) {
        Ok(p) => p,
        Err(e @ PidFileError::Running { .. }) => return fatal(e, EXIT_TEMPFAIL),
        // Only root may take the lock: without privileges this is the first thing refused.
        Err(e) if !is_root() => {
            return fatal(
                format!("{e}: picosnitch must run as root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN)"),
                EXIT_NOPERM,
            )
        }
        Err(e) => return fatal(e, EXIT_CANTCREAT),
    };
    service::limits::raise_nofile();
    let opts = Options {
        totals_capacity: cfg.monitoring.conn_map_max_entries,
        // picosnitch's setting is pages per CPU; the ring buffer is shared by all CPUs.
        ring_bytes: cfg
            .monitoring
            .perf_ring_buffer_pages
            .saturating_mul(4096)
            .saturating_mul(std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        hook_set: cfg.monitoring.only_hook_set(),
        dns: cfg.dns.enabled,
        ..Options::default()
    };
    let collector = match Collector::start(&opts) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                CollectorError::NotPrivileged => EXIT_NOPERM,
                _ => EXIT_UNAVAILABLE,
            };
            return fatal(e, code);
        }
    };
    // Like auditd: a monitor that falls behind under load misses short-lived processes.
    // (The unit sets Nice=-10 itself and forbids setpriority.)
    // SAFETY: getpriority/setpriority on the calling process have no memory-safety preconditions.
    if unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } > -10
        && unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) } != 0
    {
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
    log_dns(&collector.attached);
    log_udp_sources(&collector.attached);
    log_rescue(&collector.attached);
    // For the API's answers and the event feed; reopened on SIGHUP.
    let geoip = crate::geoip::Shared::open(&cfg.geoip);
    if !cfg.database.enabled {
        tracing::info!(
            "[database] enabled = false: no connection rows or loss reports are written to SQLite \
             (conn.log, notifications, the event feed and /metrics still get them)"
        );
    }
    // The API's sockets: activated by picosnitch.socket, or bound here. The API server serves
    // them; until it starts they are held so that no activated socket is lost.
    let fallback = Fallback::new(&paths, &cfg.api, data.gid);
    let api_listeners = match service::listeners(&fallback) {
        Ok(l) => {
            let how = if l.activated {
                "activated by systemd"
            } else {
                "bound by the daemon"
            };
            tracing::info!(
                sockets = l.len(),
                activated = l.activated,
                "API sockets {how}: {} ({})",
                l.len(),
                l.describe()
            );
            let differences = l.differences(&fallback);
            if !differences.is_empty() {
                tracing::warn!(
                    "the activated API sockets are served, but they do not follow [api]: {} \
                     (run `picosnitch systemd` again to rewrite picosnitch.socket)",
                    differences.join("; ")
                );
            }
            Some(l)
        }
        Err(e) => {
            tracing::warn!("no API sockets: {e}");
            None
        }
    };
    let mut store = match Store::open_or_replace(&paths.db) {
        Ok(s) => s,
        Err(e) => return fatal(e, EXIT_CANTCREAT),
    };
    apply_data_access(store.path(), data);
    // What this run attached, for `status` and for reading old rows in context.
    let facts = [
        ("kernel", crate::collector::kernel::release()),
        ("hook_set", collector.attached.hook_set.to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    for (k, v) in facts {
        if let Err(e) = store.set_meta(k, &v) {
            return fatal(e, EXIT_CANTCREAT);
        }
    }
    let mask = cfg
        .monitoring
        .st_dev_mask
        .unwrap_or_else(exe_cache::auto_dev_mask);
    let limits = crate::identity::hash_pool::Limits {
        max_bytes: cfg.monitoring.hash_max_bytes,
        timeout: Duration::from_secs(u64::from(cfg.monitoring.hash_timeout_seconds)),
    };
    let mut cache = exe_cache::ExeCache::with_limits(4096, mask, limits);
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
    let mut notifier = Notifier::new(ExeLog::new(paths.exe_log.clone(), data));
    if cfg.desktop.notifications {
        match crate::notify::desktop::Desktop::spawn(crate::notify::desktop::Throttle::default()) {
            Ok(desktop) => notifier = notifier.with_desktop(desktop),
            Err(e) => {
                tracing::warn!("desktop notifications are off: cannot start their thread: {e}")
            }
        }
    }
    let db_path = store.path().to_path_buf();
    let db = db_path.display().to_string();
    let feed = crate::api::Feed::new(Some(geoip.clone()));
    let sink = match Sink::start(
        store,
        identity.cache.clone(),
        notifier,
        crate::sink::Options {
            retention_days: cfg.database.retention_days,
            conn_log: cfg
                .database
                .text_log
                .then(|| crate::connlog::ConnLog::new(paths.conn_log.clone(), data)),
            filter: crate::filter::Filter::new(log_rules(&cfg.log, &loaded.log_filters)),
            feed: feed.clone(),
            db_enabled: cfg.database.enabled,
            queue_max_bytes: cfg.database.queue_max_bytes,
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            return fatal(
                format!("cannot start the database writer: {e}"),
                EXIT_UNAVAILABLE,
            )
        }
    };
    let hook_set = collector.attached.hook_set;
    let api_info = api_info(&collector.attached);
    let manager = Manager::from_env();
    if let Some(w) = manager.watchdog() {
        tracing::info!(
            "systemd watchdog: pinged every second, fires after {} ms",
            w.as_millis()
        );
    }
    let heartbeat = Heartbeat::new(manager, paths.status.clone());
    let names = crate::dns::Names::new(&cfg.dns);
    let pipeline = Pipeline::new(collector, identity, names, sink, watcher)
        .with_every_exe(cfg.monitoring.every_exe)
        .with_heartbeat(heartbeat)
        .with_feed(feed.clone());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(format!("cannot start the runtime: {e}"), EXIT_UNAVAILABLE),
    };
    let write_every = Duration::from_secs(u64::from(cfg.database.write_limit_seconds));
    let result = rt.block_on(async {
        // Handlers are installed before readiness is announced, so no signal is missed.
        let signals = Signals::install()?;
        // From here on the API server owns the listeners (and the socket file bound here).
        let api =
            api_listeners.map(|l| crate::api::start(l, db_path, feed, api_info, geoip.clone()));
        tracing::info!(
            hook_set,
            db,
            "picosnitch is monitoring (hook set {hook_set})"
        );
        if let Some(why) = errorlog::take_failure() {
            tracing::warn!("{why}");
        }
        let reload = move || {
            let g = geoip.clone();
            tokio::task::spawn_blocking(move || g.reload());
        };
        let result = pipeline.run(write_every, signals.stopped(reload)).await;
        drop(api);
        result
    });
    match result {
        Ok(()) => {
            tracing::info!("picosnitch stopped; everything was written");
            ExitCode::SUCCESS
        }
        // The writer failed (it stopped, or rows were not written): status 1, which the unit
        // restarts.
        Err(e) => fatal(e, 1),
    }
}

/// What the API reports about this run.
fn api_info(attached: &crate::collector::Attached) -> crate::api::Info {
    crate::api::Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: crate::collector::kernel::release(),
        hook_set: attached.hook_set.to_string(),
        refused: attached
            .refused
            .iter()
            .map(|(set, why)| (set.to_string(), why.clone()))
            .collect(),
        skipped: attached.skipped.clone(),
        started: crate::sink::now_unix(),
    }
}

/// Says so when the hook that reads the source of UDP datagrams read with `recv()` is missing.
/// Says when the twins that count skipped runs could not be loaded, and why.
fn log_rescue(attached: &crate::collector::Attached) {
    if let Some(why) = &attached.no_rescue {
        tracing::info!(
            "runs the kernel skips (a hook program preempted on a preemptible kernel) are reported as recursion_misses, not counted again: {why}"
        );
    }
}

fn log_udp_sources(attached: &crate::collector::Attached) {
    let consume_udp = ["fentry_skb_consume_udp:", "kp_skb_consume_udp:"];
    if attached
        .skipped
        .iter()
        .any(|w| consume_udp.iter().any(|p| w.starts_with(p)))
    {
        tracing::warn!(
            "the source of a UDP datagram read without asking for it (recv(), recvfrom() with no \
             address) is not known on this kernel: those bytes are stored with an empty remote \
             address"
        );
    }
}

/// Says which DNS capture is attached and what it cannot do on this kernel.
fn log_dns(a: &crate::collector::Attached) {
    match a.dns {
        Some(name) => {
            for (set, why) in &a.dns_refused {
                tracing::info!("DNS capture {set} refused: {why}");
            }
            match name {
                "dns" => tracing::info!("DNS answers are captured for every resolver ({name})"),
                "dns_btf" => tracing::warn!(
                    "DNS answers are captured ({name}), but this kernel cannot tell the network namespace of IPv4 UDP sockets: their names are shared by all namespaces"
                ),
                _ => tracing::warn!(
                    "DNS answers are captured ({name}), but this kernel cannot tell network namespaces: names are shared by all namespaces"
                ),
            }
        }
        None => {
            let why = a
                .dns_refused
                .iter()
                .map(|(n, r)| format!("{n}: {r}"))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!("no domain names: DNS answers cannot be captured ({why})");
        }
    }
}

/// The `[log]` switches and parsed ignore lists as the filter applies them.
fn log_rules(log: &crate::config::Log, parsed: &crate::config::LogFilters) -> crate::filter::Rules {
    crate::filter::Rules {
        addresses: log.addresses,
        commands: log.commands,
        ports: log.ports,
        ignore_ports: parsed.ports.iter().copied().collect(),
        ignore_domains: parsed.domains.clone(),
        ignore_ips: parsed.ips.clone(),
        ignore_sha256: parsed.sha256.iter().cloned().collect(),
    }
}

/// Gives the database (and its WAL and shared-memory files) the `[data]` owner, group and mode.
fn apply_data_access(db: &Path, data: DataAccess) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        if suffix.is_empty() || p.exists() {
            if let Err(e) = logfile::apply_access_at(&p, data) {
                tracing::warn!(
                    "cannot give {} the [data] owner, group and mode: {e}",
                    p.display()
                );
            }
        }
    }
}

/// This process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
