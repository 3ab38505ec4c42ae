//! service: the daemon as a system service: the verbs that manage it, systemd readiness, status
//! and watchdog, the API's activated sockets, signals and the pidfile.
pub mod control;
