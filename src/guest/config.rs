//! Named guests' configs: `CONFIG_DIR/NAME.toml` (default /etc/unifs/guests).

use super::{caps, parse_memory, Error, GuestSpec, Limits, NetSpec, Result, SyscallFilter};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How `guest start` mounts the guest's root at /run/unifs/NAME/root, and
/// how `unifs run --root-mount` serves its root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RootMount {
    /// The copy-on-write FUSE overlay (`unifs mount`): the guest's writes
    /// break shared links instead of changing the store.
    #[default]
    Overlay,
    /// A plain bind mount of the backing directory (no unification safety:
    /// only for guests whose tree shares nothing).
    Bind,
}

/// One guest's config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// The guest's backing directory (its tree as unify sees it).
    pub root: PathBuf,
    #[serde(default)]
    pub root_mount: RootMount,
    /// Default: the guest's name.
    pub hostname: Option<String>,
    /// The guest's init and its arguments.
    #[serde(default = "default_init")]
    pub init: Vec<String>,
    /// Run init under unifs's small reaper (forwards signals, reaps zombies);
    /// for inits that are not real inits.
    #[serde(default)]
    pub init_reaper: bool,
    /// What `guest enter` runs.
    #[serde(default = "default_shell")]
    pub shell: String,
    #[serde(default)]
    pub net: NetSpec,
    /// `SRC:DST[:ro]`, as `--bind`.
    #[serde(default)]
    pub binds: Vec<String>,
    /// `DIR[:SIZE]`, as `--tmpfs`.
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// `PATH[:ro]`, as `--device`: host character devices in the guest's /dev.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The guest's tree read-only, as `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `NAME=SOFT[:HARD]`, as `--rlimit`.
    #[serde(default)]
    pub rlimits: Vec<String>,
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Default 0 (root of the guest).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `USER[:GROUP]` of the guest's /etc/passwd and /etc/group, instead
    /// of `uid` and `gid` (as `unifs run --user`).
    pub user: Option<String>,
    /// Init's working directory in the guest (as `unifs run --chdir`).
    pub chdir: Option<String>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `default`, `allow-userns` or `off`, as `unifs run --syscall-filter`.
    #[serde(default)]
    pub syscall_filter: SyscallFilter,
    /// What `stop` sends init first (default: SIGRTMIN+3 for systemd,
    /// SIGINT for sysvinit, SIGTERM for others: docs/guests.md). A name,
    /// or a number (`15` as well as `"15"`).
    #[serde(default, deserialize_with = "name_or_number")]
    pub stop_signal: Option<String>,
    /// What the guest's own `reboot` does (`halt` always stops it).
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// `user` as looked up in the guest's /etc/passwd by
    /// [`GuestConfig::look_up_user`]: what a start checks and runs as.
    #[serde(skip)]
    pub account: Option<super::user::Account>,
}

/// What a named guest's keeper does when the guest reboots itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    /// Start it again, as `guest start` (VServer's and nspawn@'s way).
    #[default]
    Restart,
    /// Leave it stopped, as after a halt.
    Stop,
}

/// A signal given by name (a string) or number (an integer or a string).
fn name_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Signal {
        Number(i64),
        Name(String),
    }
    Ok(Some(match Signal::deserialize(d)? {
        Signal::Number(n) => n.to_string(),
        Signal::Name(s) => s,
    }))
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `256M`, `2G`, or bytes.
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub io_weight: Option<u32>,
}

fn default_init() -> Vec<String> {
    vec!["/sbin/init".into()]
}

fn default_shell() -> String {
    "/bin/sh".into()
}

/// Guest names become file and cgroup names: keep them plain.
pub fn check_name(name: &str) -> Result<()> {
    // Said apart: a name of plain letters would be told to use letters.
    if name.len() > 64 {
        return Err(Error::Invalid {
            what: "guest name",
            value: name.into(),
            reason: format!("at most 64 bytes (this one has {})", name.len()),
        });
    }
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with("run-")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "guest name",
            value: name.into(),
            reason: "use letters, digits, '.', '_' and '-' (not starting with '.' or 'run-')"
                .into(),
        })
    }
}

/// Where a key the config has in the wrong table belongs (`memory` at
/// the top, for `[limits] memory`), said instead of TOML's bare "unknown
/// field": a key below a `[table]` line is that table's, which is easily
/// missed. None when no key is in another table's place.
fn misplaced_key(text: &str) -> Option<String> {
    let top: toml::Table = text.parse().ok()?;
    let where_ = |t: &str| match t {
        "" => "at the top".to_string(),
        t => format!("under [{t}]"),
    };
    let has = |table: &str, key: &str, value: &toml::Value| match table {
        "" => knows::<GuestConfig>(key, value),
        "limits" => knows::<LimitsConfig>(key, value),
        _ => knows::<NetSpec>(key, value),
    };
    let tables = ["", "limits", "net"];
    for here in tables {
        let keys = match here {
            "" => Some(&top),
            t => top.get(t).and_then(toml::Value::as_table),
        };
        for (key, value) in keys.into_iter().flatten().filter(|(k, v)| !has(here, k, v)) {
            let Some(there) = tables.iter().find(|t| has(t, key, value)) else {
                continue;
            };
            let write = match *there {
                "" => "above the first [table] line".to_string(),
                t => format!("below a [{t}] line"),
            };
            return Some(format!(
                "key {key} belongs {}, not {}: write it {write}",
                where_(there),
                where_(here)
            ));
        }
    }
    None
}

/// Whether `T`, a table of the config, has a key `key` (of any value).
fn knows<T: serde::de::DeserializeOwned>(key: &str, value: &toml::Value) -> bool {
    let one = toml::Table::from_iter([(key.to_string(), value.clone())]);
    match toml::Value::Table(one).try_into::<T>() {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("unknown field"),
    }
}

/// Why the host's `/` cannot be a guest root (said for `run --root` too).
pub const HOST_ROOT: &str = "the host's own root: a guest cannot have it (pivot_root \
     refuses it, and the guest would share every host file); name a directory holding a \
     guest tree";

impl GuestConfig {
    pub fn load(config_dir: &Path, name: &str) -> Result<GuestConfig> {
        let (path, cfg) = Self::parse(config_dir, name)?;
        if cfg.init.is_empty() {
            return Err(Error::Config {
                path,
                reason: "init must name a program".into(),
            });
        }
        // Relative, it would be taken from the directory of whoever runs
        // the command: another tree, or none, from a unit or another shell.
        if !cfg.root.is_absolute() {
            return Err(Error::Config {
                path,
                reason: format!(
                    "root {:?} is not an absolute path; give the guest directory's full path",
                    cfg.root
                ),
            });
        }
        if crate::fs::canonicalize_bounded(&cfg.root).is_ok_and(|r| r == Path::new("/")) {
            return Err(Error::Config {
                path,
                reason: format!("root {:?} is {HOST_ROOT}", cfg.root),
            });
        }
        Ok(cfg)
    }

    /// The `root` guest `name`'s config names, as written (absolute), its
    /// directory not looked at: a stopped guest's in `status`, which a
    /// root in a mount that does not answer must not hold up.
    pub fn configured_root(config_dir: &Path, name: &str) -> Option<PathBuf> {
        let (_, cfg) = Self::parse(config_dir, name).ok()?;
        cfg.root.is_absolute().then_some(cfg.root)
    }

    /// The config file of guest `name` read and parsed, and its path.
    fn parse(config_dir: &Path, name: &str) -> Result<(PathBuf, GuestConfig)> {
        check_name(name)?;
        let path = config_dir.join(format!("{name}.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoConfig {
                    name: name.into(),
                    path,
                })
            }
            Err(e) => return Err(Error::io("reading guest config", path, e)),
        };
        let cfg: GuestConfig = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.clone(),
            reason: misplaced_key(&text).unwrap_or_else(|| e.to_string()),
        })?;
        Ok((path, cfg))
    }

    /// Looks `user` up in the guest's /etc/passwd (the config file
    /// `path`), once, before anything changes: the start then checks and
    /// runs as that one lookup (a check on one and a start on another
    /// could disagree). Left to the start's own checks to say: a `user`
    /// given with `uid` or `gid`, a root that is missing or in a FUSE
    /// mount that does not answer.
    pub fn look_up_user(&mut self, path: &Path) -> Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        if self.uid.is_some() || self.gid.is_some() {
            return Ok(());
        }
        let root_ok = crate::fs::refuse_stalled(&self.root).is_ok() && self.root.is_dir();
        if root_ok {
            let account = super::user::resolve(&self.root, user)
                .map_err(|e| super::spec::in_config(e, path))?;
            self.account = Some(account);
        }
        Ok(())
    }

    /// The limits the config asks for, checked.
    pub fn limits(&self) -> Result<Limits> {
        // Configs that started before the range was checked: a quota under
        // the kernel's 1 ms was then raised to it, silently.
        let cpus = match self.limits.cpus {
            Some(c) if c > 0.0 && c < 0.01 => Some(0.01),
            c => c,
        };
        let limits = Limits {
            memory: self
                .limits
                .memory
                .as_deref()
                .map(parse_memory)
                .transpose()?,
            cpus,
            pids: self.limits.pids,
            io_weight: self.limits.io_weight,
        };
        limits.check()?;
        Ok(limits)
    }

    /// Says what [`Self::limits`] changed, once per start (the limits
    /// are read more than once on the way).
    pub fn warn_raised_limits(&self) {
        if let Some(c) = self.limits.cpus.filter(|c| *c > 0.0 && *c < 0.01) {
            tracing::warn!(
                "limits.cpus = {c} is below 0.01, the least the kernel takes: 0.01 is used"
            );
        }
    }

    /// Says, once per start, that a systemd init without CAP_SYS_BOOT ends
    /// the guest on its own reboot: systemd in a container exits 0 when
    /// reboot(2) is refused (its "Exiting container."), so `systemctl
    /// reboot` would leave the guest stopped, `on_reboot` notwithstanding.
    /// Not said where `on_reboot = "stop"` asks for no restart anyway.
    pub fn warn_reboot_without_sys_boot(&self, name: &str, caps: u64) {
        let keeps_sys_boot = super::caps::number("sys_boot").is_ok_and(|n| caps & (1 << n) != 0);
        if keeps_sys_boot || self.on_reboot == OnReboot::Stop {
            return;
        }
        let Some(init) = self.init.first() else {
            return;
        };
        if super::spec::init_is_systemd(&self.root, init) {
            tracing::warn!(
                "guest {name}: its init is systemd and it keeps no CAP_SYS_BOOT: a `systemctl \
                 reboot` in it stops the guest for good (systemd exits 0 when reboot(2) is \
                 refused) instead of starting it again; give it cap_add = [\"sys_boot\"] (its \
                 reboot(2) then ends only the guest, and the syscall filter refuses kexec), or \
                 set on_reboot = \"stop\" if a reboot should leave it stopped"
            );
        }
    }

    /// The spec of this guest's init, with its root mounted at `mounted_root`.
    pub fn spec(&self, name: &str, mounted_root: PathBuf) -> Result<GuestSpec> {
        let mut spec = GuestSpec::new(name, mounted_root, self.init.clone());
        spec.hostname = self.hostname.clone().unwrap_or_else(|| name.into());
        super::spec::check_hostname(&spec.hostname)?;
        spec.net = self.net.clone();
        spec.binds = super::spec::parse_all(&self.binds)?;
        spec.tmpfs = super::spec::parse_all(&self.tmpfs)?;
        spec.devices = super::devices::parse_devices(&self.devices)?;
        spec.read_only = self.read_only;
        spec.rlimits = super::spec::parse_all(&self.rlimits)?;
        for entry in &self.env {
            if let Some(reason) = super::spec::env_entry_fault(entry) {
                return Err(Error::Invalid {
                    what: "env entry",
                    value: entry.clone(),
                    reason: reason.into(),
                });
            }
        }
        spec.env = self.env.clone();
        spec.uid = self.uid.unwrap_or(0);
        spec.gid = self.gid.unwrap_or(0);
        for (what, id) in [("uid", self.uid), ("gid", self.gid)] {
            if id == Some(u32::MAX) {
                return Err(Error::Invalid {
                    what,
                    value: u32::MAX.to_string(),
                    reason: "-1 is no id (the kernel would leave root's)".into(),
                });
            }
        }
        if let Some(user) = &self.user {
            if self.uid.is_some() || self.gid.is_some() {
                return Err(Error::Invalid {
                    what: "user",
                    value: user.clone(),
                    reason: "give either user or uid and gid, not both".into(),
                });
            }
            spec.set_user(match &self.account {
                Some(account) => account.clone(),
                None => super::user::resolve(&self.root, user)?,
            });
        }
        if let Some(dir) = &self.chdir {
            super::spec::check_workdir(dir)?;
            spec.workdir = Some(dir.clone());
        }
        spec.caps = caps::within_held(
            &self.cap_add,
            caps::keep_mask(&self.cap_add, &self.cap_drop)?,
            caps::held(),
        )?;
        spec.limits = self.limits()?;
        spec.init = self.init_reaper;
        spec.syscall_filter = self.syscall_filter;
        spec.stop_signal = match &self.stop_signal {
            Some(sig) => super::spec::parse_signal(sig)?,
            None => match self.init.first() {
                Some(init) => super::spec::default_stop_signal(&self.root, init),
                None => libc::SIGTERM,
            },
        };
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_directory_tmpfs_and_read_only_reach_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "web:x:33:34::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "www:x:34:\nlog:x:4:web\n").unwrap();
        let text = format!(
            "root = {:?}\nuser = \"web\"\nchdir = \"/srv\"\nread_only = true\n\
             tmpfs = [\"/tmp:16M\", \"/var/tmp\"]\n",
            dir.path()
        );
        let cfg: GuestConfig = toml::from_str(&text).unwrap();
        let spec = cfg.spec("web", "/run/unifs/web/root".into()).unwrap();
        assert_eq!(
            (spec.uid, spec.gid, spec.groups.clone()),
            (33, 34, vec![34, 4])
        );
        assert_eq!(spec.home.as_deref(), Some("/var/www"));
        assert_eq!(spec.workdir.as_deref(), Some("/srv"));
        assert!(spec.read_only);
        assert_eq!(spec.tmpfs[0].size, Some(16 << 20));
        assert_eq!(spec.tmpfs[1].dst, Path::new("/var/tmp"));
        // Both ways of naming the user at once: which one?
        let both: GuestConfig = toml::from_str(&format!("{text}uid = 0\n")).unwrap();
        let e = both.spec("web", "/r".into()).unwrap_err().to_string();
        assert!(e.contains("either user or uid"), "{e}");
        let relative: GuestConfig = toml::from_str(&text.replace("\"/srv\"", "\"srv\"")).unwrap();
        assert!(relative.spec("web", "/r".into()).is_err());
    }

    #[test]
    fn a_config_cpus_under_the_kernels_least_is_raised_to_it() {
        let cfg: GuestConfig = toml::from_str("root = \"/r\"\n[limits]\ncpus = 0.005\n").unwrap();
        assert_eq!(cfg.limits().unwrap().cpus, Some(0.01));
        let cfg: GuestConfig = toml::from_str("root = \"/r\"\n[limits]\ncpus = 0\n").unwrap();
        assert!(cfg.limits().is_err());
    }

    #[test]
    fn a_full_config_parses_into_a_spec() {
        let text = r#"
            root = "/srv/guests/web1"
            root_mount = "bind"
            hostname = "www"
            init = ["/sbin/init", "--quiet"]
            binds = ["/srv/data:/data:ro"]
            env = ["LANG=C"]
            cap_add = ["net_admin"]
            syscall_filter = "allow-userns"
            stop_signal = "SIGRTMIN+3"
            [net]
            mode = "veth"
            ip = "10.0.0.2/24"
            [limits]
            memory = "256M"
            pids = 100
        "#;
        let cfg: GuestConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.root_mount, RootMount::Bind);
        let spec = cfg.spec("web1", "/run/unifs/web1/root".into()).unwrap();
        assert_eq!(spec.hostname, "www");
        assert_eq!(spec.command, ["/sbin/init", "--quiet"]);
        assert_eq!(spec.limits.memory, Some(256 << 20));
        assert_eq!(spec.net.ip.as_deref(), Some("10.0.0.2/24"));
        assert!(caps::names(spec.caps).contains(&"net_admin"));
        assert_eq!(spec.syscall_filter, SyscallFilter::AllowUserns);
        assert_eq!(spec.stop_signal, libc::SIGRTMIN() + 3);
    }

    #[test]
    fn defaults_and_typos() {
        let cfg: GuestConfig = toml::from_str("root = \"/g\"").unwrap();
        assert_eq!(cfg.root_mount, RootMount::Overlay);
        assert_eq!(cfg.init, ["/sbin/init"]);
        assert_eq!(cfg.syscall_filter, SyscallFilter::Default);
        assert_eq!(
            cfg.spec("g", "/r".into()).unwrap().stop_signal,
            libc::SIGTERM
        );
        let cfg: GuestConfig = toml::from_str("root = \"/g\"\nstop_signal = \"SIGFOO\"").unwrap();
        let err = cfg.spec("g", "/r".into()).unwrap_err().to_string();
        assert!(err.contains("SIGFOO"), "{err}");
        assert!(toml::from_str::<GuestConfig>("root = \"/g\"\nhostnam = \"x\"").is_err());
        let err = toml::from_str::<GuestConfig>("root = \"/g\"\nsyscall_filter = \"strict\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow-userns"), "names the values: {err}");
    }

    #[test]
    fn a_systemd_init_gets_sigrtmin_3_unless_the_config_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["sbin", "lib/systemd", "bin"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("lib/systemd/systemd"), "").unwrap();
        std::fs::write(root.join("bin/busybox"), "").unwrap();
        // Absolute links, resolved inside the guest's tree.
        std::os::unix::fs::symlink("/lib/systemd/systemd", root.join("sbin/init")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", root.join("sbin/bbinit")).unwrap();
        // A link out of the tree leads nowhere on the host.
        std::os::unix::fs::symlink("../../../../../lib/systemd/systemd", root.join("sbin/up"))
            .unwrap();
        let signal = |extra: &str| {
            let text = format!("root = {root:?}\n{extra}");
            let cfg: GuestConfig = toml::from_str(&text).unwrap();
            cfg.spec("g", "/r".into()).unwrap().stop_signal
        };
        let rtmin3 = libc::SIGRTMIN() + 3;
        assert_eq!(signal(""), rtmin3, "the default init, /sbin/init");
        assert_eq!(signal("init = [\"/lib/systemd/systemd\"]"), rtmin3);
        assert_eq!(signal("init = [\"/sbin/bbinit\"]"), libc::SIGTERM);
        // `..` stays in the tree: /lib/systemd/systemd of the guest.
        assert_eq!(signal("init = [\"/sbin/up\"]"), rtmin3);
        assert_eq!(signal("init = [\"/sbin/missing\"]"), libc::SIGTERM);
        assert_eq!(signal("stop_signal = \"SIGINT\""), libc::SIGINT);
        assert_eq!(signal("stop_signal = 15"), libc::SIGTERM);
        assert_eq!(signal("stop_signal = \"15\""), libc::SIGTERM);
        // sysvinit: a program named init beside an inittab with ctrlaltdel.
        std::fs::write(root.join("sbin/sysv"), "").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::os::unix::fs::symlink("/sbin/sysv", root.join("x/init")).unwrap();
        let sysv = "init = [\"/x/init\"]";
        assert_eq!(signal(sysv), libc::SIGTERM, "no inittab");
        let inittab = root.join("etc/inittab");
        std::fs::write(&inittab, "#ca:12345:ctrlaltdel:/sbin/shutdown -r now\n").unwrap();
        assert_eq!(signal(sysv), libc::SIGTERM, "commented out");
        std::fs::write(
            &inittab,
            "id:2:initdefault:\nca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now\n",
        )
        .unwrap();
        // The link's target is named sysv: the program's own name counts.
        assert_eq!(signal(sysv), libc::SIGTERM);
        std::fs::rename(root.join("sbin/sysv"), root.join("sbin/init2")).unwrap();
        std::fs::create_dir_all(root.join("s")).unwrap();
        std::fs::write(root.join("s/init"), "").unwrap();
        assert_eq!(signal("init = [\"/s/init\"]"), libc::SIGINT);
        // An inittab that is a FIFO is not waited on, nor a device opened.
        std::fs::remove_file(&inittab).unwrap();
        nix::unistd::mkfifo(&inittab, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(signal("init = [\"/s/init\"]"), libc::SIGTERM);
        std::fs::remove_file(&inittab).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &inittab).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        // (Root only; the link then leads nowhere, which is refused too.)
        let _ = mknod(
            &root.join("dev/zero"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o644),
            makedev(1, 5),
        );
        assert_eq!(signal("init = [\"/s/init\"]"), libc::SIGTERM);
        std::fs::remove_file(root.join("lib/systemd/systemd")).unwrap();
        assert_eq!(signal(""), libc::SIGTERM, "a dangling link");
    }

    #[test]
    fn env_entries_need_a_value() {
        let cfg: GuestConfig = toml::from_str("root = \"/g\"\nenv = [\"LANG\"]").unwrap();
        let err = cfg.spec("g", "/r".into()).unwrap_err().to_string();
        assert!(err.contains("LANG") && err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn env_entries_need_a_name() {
        // As TOML strings.
        for bad in [r#""=v""#, r#""A B=1""#, r#""A\tB=1""#, r#""A=\u0000""#] {
            let cfg: GuestConfig =
                toml::from_str(&format!("root = \"/g\"\nenv = [{bad}]")).unwrap();
            let err = cfg.spec("g", "/m".into()).unwrap_err().to_string();
            assert!(err.contains("env entry"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_hostname_the_kernel_refuses_is_refused_first() {
        let long = "h".repeat(65);
        let cfg: GuestConfig =
            toml::from_str(&format!("root = \"/g\"\nhostname = \"{long}\"")).unwrap();
        let err = cfg.spec("g", "/r".into()).unwrap_err().to_string();
        assert!(err.contains("64 bytes"), "{err}");
    }

    #[test]
    fn names() {
        assert!(check_name("web-1.example").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "run-1"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
