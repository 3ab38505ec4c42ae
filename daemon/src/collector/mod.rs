//! collector: loads the embedded eBPF object, attaches the best hooks, drains the per-socket
//! totals, hands out the process-event and DNS-answer ring buffers and counts every loss the
//! kernel side reports.
pub mod batch;
pub mod drain;
pub mod hooks;
pub mod kernel;
pub mod kretprobe;
pub mod records;
pub mod rescue;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::{Btf, Ebpf, EbpfLoader};
use records::{
    FlowKey, FlowVal, STAT_KRETPROBE_MISSED, STAT_NAMES, STAT_RECURSION_MISSES, STAT_RESCUED,
};
use std::os::fd::AsFd;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/picosnitch.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(
        "must run as root: loading eBPF programs needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"
    )]
    NotPrivileged,
    #[error("this kernel has no BTF ({}, CONFIG_DEBUG_INFO_BTF): picosnitch needs it to relocate its eBPF programs", kernel::BTF_PATH)]
    NoBtf,
    #[error("cannot load the eBPF object: {0}")]
    Load(String),
    #[error("{0}")]
    Tracefs(String),
    #[error("no traffic hook set can be attached on kernel {release}: {}", reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join("; "))]
    NoHooks {
        release: String,
        reasons: Vec<(&'static str, String)>,
    },
    #[error("cannot attach the process hooks: {0}")]
    Common(String),
    #[error("eBPF map {0} is missing or has the wrong type")]
    Map(&'static str),
}

pub struct Options {
    pub totals_capacity: u32,
    pub ring_bytes: u32,
    /// Only this traffic hook set (`[monitoring] hook_set`); `None` tries them best first.
    pub hook_set: Option<String>,
    /// Capture DNS answers (`[dns] enabled`).
    pub dns: bool,
    /// Size of the DNS answer ring buffer.
    pub dns_ring_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            totals_capacity: 65536,
            ring_bytes: 256 * 4096,
            hook_set: None,
            dns: true,
            dns_ring_bytes: 512 * 1024,
        }
    }
}

/// What was attached, and why better sets were refused.
#[derive(Debug, Clone)]
pub struct Attached {
    pub hook_set: &'static str,
    pub refused: Vec<(&'static str, String)>,
    /// Optional hooks of the chosen set this kernel does not offer.
    pub skipped: Vec<String>,
    /// The DNS capture variant attached (`hooks::DNS`), if any.
    pub dns: Option<&'static str>,
    /// Why better DNS variants (or all of them) were refused.
    pub dns_refused: Vec<(&'static str, String)>,
    /// Why the twins that count skipped runs (`rescue`) are not attached; `None`: they are.
    pub no_rescue: Option<String>,
}

/// The outcome of trying one hook set: its name, and why it was refused.
pub type Probe = (&'static str, Result<(), String>);

pub struct Collector {
    /// Owns the loaded programs; dropping it detaches every hook.
    _ebpf: Ebpf,
    totals: MapData,
    stats: PerCpuArray<MapData, u64>,
    ring: Option<RingBuf<MapData>>,
    dns_ring: Option<RingBuf<MapData>>,
    pub capacity: u32,
    pub attached: Attached,
    /// Skipped runs no twin counted, once a second read agrees (`rescue::Confirmed`).
    misses: std::sync::Mutex<rescue::Confirmed>,
}

impl Drop for Collector {
    /// Return probes live in tracefs, outside the programs: removed here, before the programs.
    fn drop(&mut self) {
        kretprobe::detach_all();
    }
}

fn check_kernel() -> Result<Btf, CollectorError> {
    if !kernel::has_bpf_caps() {
        return Err(CollectorError::NotPrivileged);
    }
    if !kernel::has_btf() {
        return Err(CollectorError::NoBtf);
    }
    kernel::ensure_tracefs().map_err(CollectorError::Tracefs)?;
    kernel::raise_memlock();
    Btf::from_sys_fs().map_err(|_| CollectorError::NoBtf)
}

fn load(opts: &Options, object: &[u8]) -> Result<Ebpf, CollectorError> {
    // The ring buffer size must be a power-of-two number of pages.
    let ring = opts.ring_bytes.max(4096).next_power_of_two();
    let dns_ring = opts.dns_ring_bytes.max(4096).next_power_of_two();
    EbpfLoader::new()
        // The twins' task storage: a map type aya has no wrapper for, used only by the programs.
        .allow_unsupported_maps()
        .map_max_entries("totals", opts.totals_capacity.max(1024))
        .map_max_entries("procs", ring)
        .map_max_entries("dns_answers", dns_ring)
        .load(object)
        .map_err(|e| CollectorError::Load(hooks::error_chain(&e)))
}

impl Collector {
    /// Loads the object with the twins of `rescue` and attaches the process hooks and the best
    /// traffic hook set; on a kernel that refuses the twins, the plain object.
    pub fn start(opts: &Options) -> Result<Collector, CollectorError> {
        let btf = check_kernel()?;
        match Self::start_with(opts, &btf, rescue::OBJECT) {
            Ok(c) => Ok(c),
            Err(e) => {
                let why = e.to_string();
                tracing::debug!("the object with twins was refused: {why}");
                let mut c = Self::start_with(opts, &btf, OBJECT)?;
                c.attached.no_rescue = Some(why);
                Ok(c)
            }
        }
    }

    fn start_with(opts: &Options, btf: &Btf, object: &[u8]) -> Result<Collector, CollectorError> {
        let mut ebpf = load(opts, object)?;
        hooks::attach_set(&mut ebpf, btf, &hooks::COMMON).map_err(CollectorError::Common)?;
        let mut refused = Vec::new();
        let mut chosen = None;
        let mut skipped = Vec::new();
        for set in hooks::candidates(opts.hook_set.as_deref()) {
            match hooks::attach_set(&mut ebpf, btf, set) {
                Ok(s) => {
                    chosen = Some(set.name);
                    skipped = s;
                    break;
                }
                Err(e) => refused.push((set.name, e)),
            }
        }
        let Some(hook_set) = chosen else {
            hooks::unload_set(&mut ebpf, &hooks::COMMON);
            return Err(CollectorError::NoHooks {
                release: kernel::release(),
                reasons: refused,
            });
        };
        let totals = match ebpf.take_map("totals") {
            Some(aya::maps::Map::HashMap(m)) => m,
            _ => return Err(CollectorError::Map("totals")),
        };
        let stats = ebpf
            .take_map("stats")
            .and_then(|m| PerCpuArray::try_from(m).ok())
            .ok_or(CollectorError::Map("stats"))?;
        let ring = ebpf
            .take_map("procs")
            .and_then(|m| RingBuf::try_from(m).ok())
            .ok_or(CollectorError::Map("procs"))?;
        let (dns, dns_refused) = if opts.dns {
            attach_dns(&mut ebpf, btf)
        } else {
            (
                None,
                vec![("dns", "off ([dns] enabled = false)".to_string())],
            )
        };
        let dns_ring = match dns {
            Some(_) => Some(
                ebpf.take_map("dns_answers")
                    .and_then(|m| RingBuf::try_from(m).ok())
                    .ok_or(CollectorError::Map("dns_answers"))?,
            ),
            None => None,
        };
        Ok(Collector {
            _ebpf: ebpf,
            totals,
            stats,
            ring: Some(ring),
            dns_ring,
            capacity: opts.totals_capacity.max(1024),
            attached: Attached {
                hook_set,
                refused,
                skipped,
                dns,
                dns_refused,
                no_rescue: None,
            },
            misses: Default::default(),
        })
    }

    /// Tries every traffic hook set on its own (for `doctor`); nothing stays attached.
    pub fn probe_all(opts: &Options) -> Result<Vec<Probe>, CollectorError> {
        let btf = check_kernel()?;
        let mut out = Vec::new();
        let sets = std::iter::once(&hooks::COMMON)
            .chain(hooks::TRAFFIC.iter())
            .chain(hooks::DNS.iter());
        for set in sets {
            let mut ebpf = load(opts, rescue::OBJECT).or_else(|_| load(opts, OBJECT))?;
            let r = hooks::attach_set(&mut ebpf, &btf, set).map(|_| ());
            hooks::unload_set(&mut ebpf, set);
            out.push((set.name, r));
        }
        Ok(out)
    }

    /// The process-event ring buffer, handed once to the reader task.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.ring.take()
    }

    /// The DNS-answer ring buffer (when a DNS variant is attached), handed once to the reader.
    pub fn take_dns_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.dns_ring.take()
    }

    pub fn read_totals(&self) -> std::io::Result<Vec<(FlowKey, FlowVal)>> {
        batch::lookup_all(self.totals.fd().as_fd(), self.capacity as usize)
    }

    pub fn retire(&self, keys: &[FlowKey]) -> std::io::Result<usize> {
        batch::delete_keys(self.totals.fd().as_fd(), keys)
    }

    fn stat_slots(&self) -> [u64; STAT_NAMES.len()] {
        let mut out = [0u64; STAT_NAMES.len()];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(v) = self.stats.get(&(i as u32), 0) {
                *slot = v.iter().sum();
            }
        }
        out
    }

    /// Per-CPU counters summed, indexed as `records::STAT_NAMES`; slot `STAT_RECURSION_MISSES`
    /// holds the program runs the kernel skipped that no twin counted (`rescue::net_misses`).
    pub fn stats(&self) -> [u64; STAT_NAMES.len()] {
        let mut out = self.stat_slots();
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        out[STAT_RECURSION_MISSES] = misses.update(|| {
            let per_program = hooks::recursion_misses(&self._ebpf);
            rescue::net_misses(per_program.into_iter(), self.stat_slots()[STAT_RESCUED])
        });
        out[STAT_KRETPROBE_MISSED] = kretprobe::missed();
        out
    }
}

/// Attaches the best DNS capture variant; returns it and why better ones were refused.
fn attach_dns(ebpf: &mut Ebpf, btf: &Btf) -> (Option<&'static str>, Vec<(&'static str, String)>) {
    let mut refused = Vec::new();
    for set in &hooks::DNS {
        match hooks::attach_set(ebpf, btf, set) {
            Ok(_) => return (Some(set.name), refused),
            Err(e) => refused.push((set.name, e)),
        }
    }
    (None, refused)
}
