//! service::units: `picosnitch systemd`: writes a hardened `picosnitch.service` (Type=notify,
//! watchdog, only the capabilities this configuration needs, read-only system, private network
//! unless reverse DNS is configured, bounded memory, tasks and open files) and
//! `picosnitch.socket` (the API on the `[api] listen` address and /run/picosnitch/api.sock, each
//! only when `[api]` turns it on).
use super::control::systemd_booted;
use crate::config::Loaded;
use crate::config::RLIMIT_NOFILE_DEFAULT;
use crate::paths::Paths;
use crate::run::{EXIT_CANTCREAT, EXIT_CONFIG, EXIT_NOPERM, EXIT_TEMPFAIL, EXIT_UNAVAILABLE};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const SERVICE: &str = "picosnitch.service";
pub const SOCKET: &str = "picosnitch.socket";
/// MemoryMax= of the service: the daemon, its BPF maps (charged to its cgroup) and notification
/// helpers; a few hundred MB under heavy traffic, so the kernel stops a leak long before the
/// machine suffers.
pub const MEMORY_MAX: &str = "1G";
/// TasksMax= of the service: the daemon's threads (main loop, writer, runtime, API, hashing) and
/// one notification helper per logged-in user at a time.
pub const TASKS_MAX: u32 = 256;

/// What the units are generated from.
pub struct UnitInput<'a> {
    /// The binary ExecStart runs.
    pub exe: &'a Path,
    /// `--config FILE` for ExecStart, when not the default file.
    pub config: Option<&'a Path>,
    pub loaded: &'a Loaded,
    /// The name of `[data] group`, for the unix socket.
    pub group: &'a str,
}

/// The capabilities the daemon keeps, each with why.
pub fn capabilities(loaded: &Loaded) -> Vec<(&'static str, &'static str)> {
    let mut caps = vec![
        ("CAP_BPF", "load and attach the eBPF programs"),
        ("CAP_PERFMON", "tracing programs and perf events"),
        (
            "CAP_SYS_ADMIN",
            "fanotify marks on executables, cgroup hooks",
        ),
        ("CAP_SYS_PTRACE", "open /proc/PID/exe of every process"),
        (
            "CAP_DAC_READ_SEARCH",
            "read executables and /proc entries of other users",
        ),
    ];
    if loaded.config.desktop.notifications {
        caps.push(("CAP_SETUID", "run the notification helper as each user"));
        caps.push(("CAP_SETGID", "run the notification helper as each user"));
        caps.push(("CAP_KILL", "stop a notification helper that hangs"));
    }
    if loaded.data.gid != 0 || loaded.data.uid != 0 {
        caps.push(("CAP_CHOWN", "give data files the [data] owner and group"));
    }
    if loaded.data.uid != 0 {
        caps.push((
            "CAP_FOWNER",
            "keep the mode of data files owned by [data] owner",
        ));
        caps.push(("CAP_DAC_OVERRIDE", "write data files owned by [data] owner"));
    }
    caps
}

/// True when the daemon (or one of its helpers) needs the network (`[dns] reverse_dns` asks the
/// system resolver). `[virustotal]` and `[database.remote]` do not exist yet and open nothing.
pub fn needs_network(loaded: &Loaded) -> bool {
    loaded.config.dns.reverse_dns
}

/// `arg` as one word of a systemd command line: as is when it is plain, otherwise in double
/// quotes with C escapes for `\`, `"` and control characters; `%` and `$` are doubled (systemd
/// would expand specifiers and variables).
pub fn systemd_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@=".contains(&b));
    if plain {
        return arg.to_string();
    }
    let mut q = String::from("\"");
    for c in arg.chars() {
        match c {
            '\\' => q.push_str("\\\\"),
            '"' => q.push_str("\\\""),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '%' => q.push_str("%%"),
            '$' => q.push_str("$$"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(q, "\\x{b:02x}");
                }
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn under(exe: &Path, dirs: &[&str]) -> bool {
    dirs.iter().any(|d| exe.starts_with(d))
}

/// True when `[api]` leaves at least one listener on, so that `picosnitch.socket` is written.
pub fn has_sockets(api: &crate::config::Api) -> bool {
    api.tcp_addr().is_some() || api.socket
}

pub fn service_unit(i: &UnitInput) -> String {
    let mut u = String::new();
    unit_section(&mut u, i);
    service_section(&mut u, i);
    sandbox(&mut u, i);
    network_access(&mut u, i.loaded);
    let _ = writeln!(u, "\n[Install]\nWantedBy=multi-user.target");
    u
}

/// The ExecStart= line: this binary, with the `--config` given.
fn exec_start(i: &UnitInput) -> String {
    let mut exec = format!(
        "{} start-no-daemon",
        systemd_quote(&i.exe.to_string_lossy())
    );
    if let Some(c) = i.config {
        let _ = write!(exec, " --config {}", systemd_quote(&c.to_string_lossy()));
    }
    exec
}

/// [Unit], and [Service] up to the directories: start, restart, limits.
fn unit_section(u: &mut String, i: &UnitInput) {
    let sockets = has_sockets(&i.loaded.config.api);
    let _ = writeln!(
        u,
        "# Written by `picosnitch systemd`. [desktop] notifications, [data] owner/group,\n\
         # [dns] reverse_dns and [monitoring] rlimit_nofile decide the privileges and limits\n\
         # below: run it again after changing them.\n\
         [Unit]\n\
         Description=picosnitch: network traffic per executable"
    );
    if sockets {
        let _ = writeln!(u, "Requires={SOCKET}\nAfter={SOCKET}");
    } else {
        let _ = writeln!(u, "# [api] turns the TCP listener and the unix socket off.");
    }
}

/// [Service]: notify, restarts, limits, directories.
fn service_section(u: &mut String, i: &UnitInput) {
    let l = i.loaded;
    let exec = exec_start(i);
    let _ = writeln!(
        u,
        "\n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={exec}\n\
         # SIGHUP by the shell's kill: /bin/kill is missing from minimal systems (Debian's procps).\n\
         ExecReload=/bin/sh -c 'kill -HUP \"$$MAINPID\"'\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # Invalid config ({EXIT_CONFIG}), missing privileges ({EXIT_NOPERM}), unsupported kernel \
         ({EXIT_UNAVAILABLE}),\n\
         # files that cannot be created ({EXIT_CANTCREAT}), another daemon ({EXIT_TEMPFAIL}): \
         restarting cannot help.\n\
         RestartPreventExitStatus={EXIT_UNAVAILABLE} {EXIT_CANTCREAT} {EXIT_TEMPFAIL} \
         {EXIT_NOPERM} {EXIT_CONFIG}\n\
         WatchdogSec=30\n\
         TimeoutStartSec=90\n\
         TimeoutStopSec=60\n\
         Nice=-10\n\
         LimitMEMLOCK=infinity\n\
         # API connections and fanotify marks are open files ([monitoring] rlimit_nofile).\n\
         LimitNOFILE={}\n\
         MemoryMax={MEMORY_MAX}\n\
         TasksMax={TASKS_MAX}",
        l.config
            .monitoring
            .rlimit_nofile
            .unwrap_or(RLIMIT_NOFILE_DEFAULT)
    );
    let _ = writeln!(
        u,
        "StateDirectory=picosnitch\n\
         LogsDirectory=picosnitch\n\
         RuntimeDirectory=picosnitch\n\
         # The API socket lives there too.\n\
         RuntimeDirectoryPreserve=yes\n\
         ConfigurationDirectory=picosnitch\n\
         UMask=0077"
    );
}

/// Capabilities, file system, kernel and system call restrictions.
fn sandbox(u: &mut String, i: &UnitInput) {
    let l = i.loaded;
    let caps = capabilities(l);
    // A binary in a home directory must stay reachable; desktop notifications read /run/user.
    let home = if l.config.desktop.notifications || under(i.exe, &["/home", "/root", "/run/user"]) {
        "read-only"
    } else {
        "yes"
    };
    for (cap, why) in &caps {
        let _ = writeln!(u, "# {cap}: {why}");
    }
    let names: Vec<&str> = caps.iter().map(|(c, _)| *c).collect();
    let _ = writeln!(
        u,
        "CapabilityBoundingSet={}\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome={home}\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         PrivateMounts=yes\n\
         PrivateIPC=yes\n\
         ProtectKernelTunables=yes\n\
         # The kprobe hook set creates its return probes in tracefs.\n\
         ReadWritePaths=-/sys/kernel/tracing\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectClock=yes\n\
         ProtectHostname=yes\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         KeyringMode=private\n\
         DevicePolicy=closed\n\
         SystemCallArchitectures=native\n\
         SystemCallFilter=@system-service bpf perf_event_open fanotify_init fanotify_mark\n\
         SystemCallFilter=~@obsolete @clock @cpu-emulation @module @mount @raw-io @reboot @swap \
         @resources\n\
         SystemCallErrorNumber=EPERM",
        names.join(" ")
    );
    if l.config.desktop.notifications {
        let _ = writeln!(
            u,
            "# The notification helper goes back to nice 0 (only ever lowering its priority).\n\
             SystemCallFilter=setpriority"
        );
    }
}

/// The network: none, the API sockets systemd passes, or the resolver for reverse DNS.
fn network_access(u: &mut String, l: &Loaded) {
    let sockets = has_sockets(&l.config.api);
    if needs_network(l) {
        let _ = writeln!(
            u,
            "# [dns] reverse_dns asks the system's resolver: the network stays reachable.\n\
             PrivateNetwork=no\n\
             RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"
        );
    } else {
        if sockets {
            let _ = writeln!(
                u,
                "# The API sockets come from {SOCKET}; nothing else needs the network."
            );
        } else {
            let _ = writeln!(u, "# Nothing needs the network.");
        }
        let _ = writeln!(
            u,
            "PrivateNetwork=yes\n\
             IPAddressDeny=any\n\
             RestrictAddressFamilies=AF_UNIX"
        );
    }
}

/// `picosnitch.socket`: a TCP `ListenStream=` for `[api] listen` (IPv6 as `[::1]:5100`) and the
/// unix socket when `[api] socket` is on; None when `[api]` turns both off.
pub fn socket_unit(api: &crate::config::Api, group: &str) -> Option<String> {
    if !has_sockets(api) {
        return None;
    }
    let mut u = format!(
        "# Written by `picosnitch systemd` from [api] listen and [api] socket: the API's sockets,\n\
         # passed to {SERVICE}. Run it again after changing them.\n\
         [Unit]\n\
         Description=picosnitch API sockets\n\
         \n\
         [Socket]\n"
    );
    if let Some(addr) = api.tcp_addr() {
        let _ = writeln!(u, "ListenStream={addr}");
    }
    if api.socket {
        let _ = writeln!(u, "ListenStream=/run/picosnitch/api.sock");
    }
    let _ = write!(
        u,
        "FileDescriptorName=api\n\
         SocketMode=0660\n\
         SocketGroup={group}\n\
         DirectoryMode=0755\n\
         RemoveOnStop=yes\n\
         Service={SERVICE}\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n"
    );
    Some(u)
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    super::replace_file(path, text.as_bytes(), true)
}

/// Removes a socket unit written for an earlier `[api]`; none there is fine.
fn remove_stale(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `picosnitch systemd [--config FILE] [--unit-dir DIR]`: writes both units into DIR, or into
/// /etc/systemd/system (under `$PICOSNITCH_ROOT` when set) and then reloads systemd when it runs.
pub fn systemd(config: Option<PathBuf>, unit_dir: Option<PathBuf>) -> ExitCode {
    let mut paths = Paths::from_env();
    let reload = unit_dir.is_none();
    if let Some(dir) = unit_dir {
        paths.unit_dir = dir;
    }
    let cfg_path = config.clone().unwrap_or_else(|| paths.config.clone());
    // Units written into a directory are for another machine (a package being built): the
    // [data] owner and group may exist only there.
    let loaded = match if reload {
        crate::config::load(&cfg_path, config.is_some())
    } else {
        crate::config::load_for_elsewhere(&cfg_path, config.is_some())
    } {
        Ok(l) => l,
        Err(e) => {
            eprintln!("picosnitch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &loaded.warnings {
        eprintln!("picosnitch: warning: {w}");
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("picosnitch: cannot tell where this binary is: {e}");
            return ExitCode::FAILURE;
        }
    };
    if under(&exe, &["/tmp", "/var/tmp"]) {
        eprintln!(
            "picosnitch: warning: {} is in a temporary directory the service cannot see \
             (PrivateTmp=yes): install it to /usr/local/bin first",
            exe.display()
        );
    }
    let input = UnitInput {
        exe: &exe,
        config: config.as_deref(),
        loaded: &loaded,
        group: &loaded.config.data.group,
    };
    let socket = socket_unit(&loaded.config.api, input.group);
    let socket_path = paths.unit_dir.join(SOCKET);
    let result = std::fs::create_dir_all(&paths.unit_dir)
        .and_then(|()| write_file(&paths.unit_dir.join(SERVICE), &service_unit(&input)))
        .and_then(|()| match &socket {
            Some(text) => write_file(&socket_path, text),
            None => remove_stale(&socket_path),
        });
    if let Err(e) = result {
        eprintln!(
            "picosnitch: cannot write the units to {}: {e}",
            paths.unit_dir.display()
        );
        return ExitCode::from(73);
    }
    match &socket {
        Some(_) => println!(
            "wrote {} and {}",
            paths.unit_dir.join(SERVICE).display(),
            socket_path.display()
        ),
        None => println!(
            "wrote {} ([api] turns every API socket off: no {SOCKET}; if one was enabled, \
             `systemctl disable --now {SOCKET}`)",
            paths.unit_dir.join(SERVICE).display()
        ),
    }
    if reload && crate::paths::root_from_env().is_none() && systemd_booted() {
        let ok = std::process::Command::new("systemctl")
            .arg("daemon-reload")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("picosnitch: warning: `systemctl daemon-reload` failed");
        }
        let units = if socket.is_some() {
            format!("{SOCKET} {SERVICE}")
        } else {
            SERVICE.to_string()
        };
        println!("start it with: systemctl enable --now {units}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DataAccess, LogFilters};

    fn loaded(config: Config, data: DataAccess) -> Loaded {
        Loaded {
            config,
            warnings: Vec::new(),
            unknown: Vec::new(),
            data,
            log_filters: LogFilters::default(),
        }
    }

    #[test]
    fn reverse_dns_keeps_the_network() {
        let mut c = Config::default();
        c.dns.reverse_dns = true;
        let l = loaded(c, DataAccess::default());
        assert!(needs_network(&l));
        assert!(!needs_network(&loaded(
            Config::default(),
            DataAccess::default()
        )));
    }

    #[test]
    fn privileges_follow_the_config() {
        let l = loaded(Config::default(), DataAccess::default());
        let i = UnitInput {
            exe: Path::new("/usr/local/bin/picosnitch"),
            config: None,
            loaded: &l,
            group: "root",
        };
        let u = service_unit(&i);
        assert!(
            u.contains("ExecStart=/usr/local/bin/picosnitch start-no-daemon\n"),
            "{u}"
        );
        assert!(u.contains(
            "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE \
             CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID CAP_KILL\n"
        ));
        assert!(u.contains("PrivateNetwork=yes\n") && u.contains("ProtectHome=read-only\n"));
        assert!(
            u.contains("RestartPreventExitStatus=69 73 75 77 78\n"),
            "{u}"
        );
        assert!(
            u.contains("\nLimitNOFILE=65536\nMemoryMax=1G\nTasksMax=256\n"),
            "{u}"
        );
        assert!(u.contains("\nSystemCallFilter=setpriority\n"), "{u}");

        let mut c = Config::default();
        c.desktop.notifications = false;
        c.virustotal.api_key = "k".repeat(64);
        let data = DataAccess {
            uid: 1000,
            gid: 4,
            mode: 0o640,
        };
        let l = loaded(c, data);
        let i = UnitInput {
            config: Some(Path::new("/etc/ps.toml")),
            loaded: &l,
            ..i
        };
        let u = service_unit(&i);
        assert!(u.contains("start-no-daemon --config /etc/ps.toml\n"), "{u}");
        assert!(u.contains(
            "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_PTRACE \
             CAP_DAC_READ_SEARCH CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE\n"
        ));
        // VirusTotal does not exist yet: its key opens no network.
        assert!(u.contains("PrivateNetwork=yes\n") && u.contains("ProtectHome=yes\n"));
        assert!(!u.contains("setpriority"), "{u}");
    }

    #[test]
    fn exec_start_quotes_what_systemd_would_split_or_expand() {
        assert_eq!(
            systemd_quote("/usr/local/bin/picosnitch"),
            "/usr/local/bin/picosnitch"
        );
        assert_eq!(
            systemd_quote("/opt/my tools/100%/$HOME/\"x\"\\y\n\x01"),
            "\"/opt/my tools/100%%/$$HOME/\\\"x\\\"\\\\y\\n\\x01\""
        );
        let mut c = Config::default();
        c.monitoring.rlimit_nofile = Some(4096);
        let l = loaded(c, DataAccess::default());
        let u = service_unit(&UnitInput {
            exe: Path::new("/opt/a b/picosnitch"),
            config: Some(Path::new("/etc/ps 1.toml")),
            loaded: &l,
            group: "root",
        });
        assert!(
            u.contains(
                "ExecStart=\"/opt/a b/picosnitch\" start-no-daemon --config \"/etc/ps 1.toml\"\n"
            ),
            "{u}"
        );
        assert!(u.contains("\nLimitNOFILE=4096\n"), "{u}");
    }

    #[test]
    fn the_socket_unit_follows_api() {
        let mut api = crate::config::Api::default();
        let u = socket_unit(&api, "adm").unwrap();
        assert!(
            u.contains("SocketGroup=adm\n") && u.contains("SocketMode=0660\n"),
            "{u}"
        );
        assert!(
            u.contains("\nListenStream=127.0.0.1:5100\nListenStream=/run/picosnitch/api.sock\n")
        );
        api.listen = "[::1]:5199".into();
        let u = socket_unit(&api, "root").unwrap();
        assert!(u.contains("\nListenStream=[::1]:5199\n"), "{u}");
        assert!(!u.contains("127.0.0.1"), "{u}");
        api.listen = "10.1.2.3:8080".into();
        api.socket = false;
        let u = socket_unit(&api, "root").unwrap();
        assert!(
            u.contains("\nListenStream=10.1.2.3:8080\nFileDescriptorName="),
            "{u}"
        );
        assert!(!u.contains("api.sock"), "{u}");
        api.listen = String::new();
        api.socket = true;
        let u = socket_unit(&api, "root").unwrap();
        assert_eq!(u.matches("ListenStream=").count(), 1, "{u}");
        assert!(u.contains("ListenStream=/run/picosnitch/api.sock\n"), "{u}");

        // Both off: no socket unit, and the service does not wait for one.
        api.socket = false;
        assert!(socket_unit(&api, "root").is_none());
        let c = Config {
            api,
            ..Config::default()
        };
        let l = loaded(c, DataAccess::default());
        let i = UnitInput {
            exe: Path::new("/usr/local/bin/picosnitch"),
            config: None,
            loaded: &l,
            group: "root",
        };
        let s = service_unit(&i);
        assert!(!s.contains(SOCKET), "{s}");
        let l = loaded(Config::default(), DataAccess::default());
        let s = service_unit(&UnitInput { loaded: &l, ..i });
        assert!(
            s.contains("Requires=picosnitch.socket\nAfter=picosnitch.socket\n"),
            "{s}"
        );
    }
}
