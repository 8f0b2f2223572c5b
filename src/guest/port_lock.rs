//! A bridged veth guest locked to its own MAC address (`--lock-mac`,
//! `[net] lock_mac`). Guest root keeps CAP_NET_RAW, so it can send frames
//! from another guest's MAC address, and a learning bridge then sends that
//! guest's frames to it until the other sends again. Here `eth0` gets an
//! address derived from the guest's name and the host's machine-id (stable
//! across starts, as systemd-nspawn's veth addresses are), and the host
//! end's port learns nothing and takes frames only from a source the bridge
//! has an entry for on that port (`locked`, Linux 5.18): one static entry,
//! that address. The entry is sticky: a port that still learns (another
//! guest's without the lock, the LAN uplink) sending from that address does
//! not move it. Port flags and entry are the port's, so they go with the
//! interface.
//!
//! A locked port checks the source of untagged and tagged frames alike, and
//! a bridge without `vlan_filtering` forwards a tagged frame as it is: the
//! guest could talk on a VLAN the bridge's other ports carry (a host's
//! `eth1.42` on an uplink), or send bridge-control frames (STP BPDUs, which
//! a bridge without STP floods to its uplink). So the port's ingress, before
//! the bridge, drops VLAN-tagged and link-control frames ([`DROPPED_TYPES`])
//! and frames to IEEE 802.1's group addresses (01:80:c2:…: STP, LLDP,
//! 802.1X, the all-bridges address, MVRP, which registers VLANs on a
//! switch's trunk port, CFM), by an nftables `netdev` table of the port's. Unlike the port's flags the table outlives the
//! interface (Linux 6.16 keeps a chain whose device went, to hook it again
//! to the next of that name): the guest's clean-up deletes it.

use super::net::{ip, Tool};
use super::spec::Names;
use super::{Error, Result};

/// Where the host's identity is read from (as nspawn reads it).
const MACHINE_ID: &str = "/etc/machine-id";

/// The MAC address `eth0` of guest `guest` gets, `aa:bb:…`; an error names
/// the setting as `names` does.
pub fn guest_mac(guest: &str, names: Names) -> Result<String> {
    let lock_o = names.of("--lock-mac");
    let id = std::fs::read_to_string(MACHINE_ID).unwrap_or_default();
    let id = id.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Net(format!(
            "{lock_o}: {MACHINE_ID} is missing, empty or not 32 hex digits: the guest's MAC \
             address is derived from it and the guest's name, so that another host's guest \
             of that name on the LAN gets another; `systemd-machine-id-setup` (or \
             `dbus-uuidgen --ensure={MACHINE_ID}`) writes one"
        )));
    }
    Ok(format_mac(mac_of(id, guest)))
}

/// A locally administered unicast address (the first byte's bit 1 set, bit
/// 0 clear) from a digest of the machine-id and the guest's name: the same
/// for each start of that guest on that host.
fn mac_of(machine_id: &str, guest: &str) -> [u8; 6] {
    let mut hasher = blake3::Hasher::new_derive_key("unifs 2026-12-06 guest eth0 MAC address");
    hasher.update(machine_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(guest.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&hasher.finalize().as_bytes()[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// Refuses bridge `bridge` (its /sys/class/net directory `dev`) where it
/// filters VLANs: its fdb entries are then per VLAN, and a port's VLANs
/// are the operator's to set once it has joined (`bridge vlan add`), after
/// unifs's start, so an entry made at the start would not cover the VLAN
/// the guest ends up on, cutting it off.
pub fn check_bridge(details: &str, bridge: &str, names: Names) -> Result<()> {
    if !filters_vlans(details) {
        return Ok(());
    }
    let [lock_o, bridge_o] = ["--lock-mac", "--bridge"].map(|o| names.of(o));
    Err(Error::Net(format!(
        "{lock_o} on {bridge_o} {bridge}: the bridge filters VLANs (vlan_filtering 1), whose \
         forwarding entries are per VLAN, and the port's VLANs are set after the guest \
         starts; leave {lock_o} out there and lock the port by hand with an entry per VLAN \
         (docs/guests.md, \"Guests on a bridge\"), or use a bridge without vlan_filtering"
    )))
}

/// Whether the bridge whose `ip -d -o link show` line is `details` filters
/// VLANs ("… vlan_filtering 1 …"; none said: a kernel without VLAN
/// filtering).
fn filters_vlans(details: &str) -> bool {
    let mut words = details.split_whitespace();
    words.any(|w| w == "vlan_filtering") && words.next().is_some_and(|v| v != "0")
}

/// Locks bridge port `host_if` (interface `ifindex`) to `mac`: no
/// learning, frames only from sources with an entry on this port (checked:
/// a kernel before 5.18 takes `locked` without a word and locks nothing),
/// and a static sticky entry for `mac`. `replace`, not `add`: while the
/// guest is stopped (a restart, a reboot of its own) any learning port may
/// send from its address, which the other guests saw, and the bridge
/// learns it there; `add` then failed ("File exists") and the guest did
/// not start. The address is this guest's (derived from its name, and one
/// name has one `ve-` interface), so an entry for it elsewhere is a
/// forger's or stale. Returns the name of the port's filter.
pub fn lock(host_if: &str, ifindex: u32, mac: &str, names: Names) -> Result<String> {
    ip(&[
        "link",
        "set",
        "dev",
        host_if,
        "type",
        "bridge_slave",
        "learning",
        "off",
        "locked",
        "on",
    ])?;
    let shown = Tool::Ip.output(&["-d", "-j", "link", "show", "dev", host_if])?;
    if !is_locked(&shown) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        return Err(Error::Net(format!(
            "{}: the kernel (Linux {}) did not lock bridge port {host_if}: locked ports need \
             Linux 5.18 or later; leave it out on this host",
            names.of("--lock-mac"),
            release.trim()
        )));
    }
    Tool::Bridge.output(&[
        "fdb", "replace", mac, "dev", host_if, "master", "static", "sticky",
    ])?;
    filter(host_if, ifindex)
}

/// The nftables table (family `netdev`) of the filter of port `host_if`
/// made for interface `ifindex`: `unifs-lock-INDEX-ve-NAME`. The index
/// tells whose it is: one name is `ve-NAME` of a guest of that name in
/// each run dir, one at a time, while an index is one interface's (not
/// reused soon, as the record's `host_ifindex` trusts), so a clean-up
/// deletes its own guest's table and never a table another run dir's
/// guest of that name made since.
pub fn table_of(host_if: &str, ifindex: u32) -> String {
    format!("unifs-lock-{ifindex}-{host_if}")
}

/// Whether nftables table `table` is a filter of port `host_if`, for any
/// interface of that name: [`table_of`]'s, or an older unifs's
/// `unifs-lock-ve-NAME`. Told apart whatever the names: an index is
/// digits, and no `ve-` name starts with one.
fn is_table_of(table: &str, host_if: &str) -> bool {
    let Some(rest) = table.strip_prefix("unifs-lock-") else {
        return false;
    };
    let indexed = rest.split_once('-').is_some_and(|(index, port)| {
        port == host_if && !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())
    });
    indexed || rest == host_if
}

/// The ethertypes a locked port drops: VLAN tags (802.1Q, 802.1ad, and the
/// older Q-in-Q tags 0x9100, 0x9200, 0x9300 a switch may be set to take),
/// and link control, which a switch takes from its port whatever the
/// destination (a pause frame or an 802.1X EAPOL-Logoff to its own
/// address): MAC control (pause), slow protocols (LACP), EAPOL, LLDP.
/// 802.1Q with VLAN 0 (priority only) too: no Linux guest sends it
/// untold, and one may hold a second tag.
const DROPPED_TYPES: [&str; 9] = [
    "0x8100", "0x88a8", "0x9100", "0x9200", "0x9300", "0x8808", "0x8809", "0x888e", "0x88cc",
];

/// Drops, at `host_if`'s ingress, the frames a locked port must not pass
/// on (see the module's comment); returns the table's name. One
/// transaction: a table of that name is replaced, not added to.
fn filter(host_if: &str, ifindex: u32) -> Result<String> {
    let table = table_of(host_if, ifindex);
    let rules = format!(
        "add table netdev {table}; delete table netdev {table}; \
         table netdev {table} {{ chain ingress {{ \
         type filter hook ingress device \"{host_if}\" priority -500; policy accept; \
         ether type {{ {} }} drop; \
         ether daddr & ff:ff:ff:00:00:00 == 01:80:c2:00:00:00 drop; }}; }}",
        DROPPED_TYPES.join(", ")
    );
    Tool::Nft.output(&[&rules]).map(|_| table)
}

/// Deletes filter `table` ([`table_of`]), if it is there. Not there, or no
/// `nft`: nothing to do.
pub fn unfilter(table: &str) {
    let _ = Tool::Nft.output(&["delete", "table", "netdev", table]);
}

/// Deletes every filter of port `host_if` ([`is_table_of`]), whatever
/// interface of that name it was made for, and whatever the guest's
/// `lock_mac`: the tables are unifs's, named after an interface of
/// unifs's, and one a killed clean-up left would filter the next guest of
/// that name (locked or not). Only where none of them can be a live
/// guest's: a start's, before it makes `host_if` (no interface of that
/// name, veth set-ups taking turns), or undoing its own set-up, still
/// under the host's lock. Never a clean-up's: another run dir's guest of
/// that name may run.
pub fn unfilter_port(host_if: &str) {
    let Ok(listed) = Tool::Nft.output(&["list", "tables", "netdev"]) else {
        return;
    };
    let tables = listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table netdev "))
        .filter(|t| is_table_of(t, host_if));
    for table in tables {
        unfilter(table);
    }
}

/// A starting guest's filter, deleted when dropped unless [`Made::keep`]
/// says the start succeeded: a start that fails after the set-up of its
/// host side (its command not found, its keeper not started) leaves none.
pub struct Made(Option<String>);

impl Made {
    /// Filter `table`, if its set-up made one.
    pub fn filter(table: Option<String>) -> Made {
        Made(table)
    }

    /// The start succeeded: the guest's clean-up deletes it.
    pub fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(table) = self.0.take() {
            unfilter(&table);
        }
    }
}

/// The MAC address a locked port was locked to and its filter's table.
#[derive(Clone, Debug)]
pub struct Locked {
    pub mac: String,
    pub table: String,
}

/// Whether `ip -d -j link show`'s output says the port is locked (a kernel
/// without locked ports leaves the key out).
fn is_locked(shown: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(shown).unwrap_or_default();
    v[0]["linkinfo"]["info_slave_data"]["locked"] == serde_json::Value::Bool(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guests_mac_is_stable_local_unicast_and_its_own() {
        let id = "3d1219c7c4c5404aaa1f6d2a48adfda4";
        let web1 = mac_of(id, "web1");
        assert_eq!(web1, mac_of(id, "web1"));
        assert_eq!(web1[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(web1, mac_of(id, "web2"));
        assert_ne!(web1, mac_of("0d1219c7c4c5404aaa1f6d2a48adfda4", "web1"));
        assert_eq!(format_mac([0x02, 0, 0xab, 1, 2, 0xff]), "02:00:ab:01:02:ff");
    }

    #[test]
    fn a_ports_tables_are_told_from_other_ports() {
        assert_eq!(table_of("ve-web1", 42), "unifs-lock-42-ve-web1");
        assert!(is_table_of("unifs-lock-42-ve-web1", "ve-web1"));
        assert!(
            is_table_of("unifs-lock-ve-web1", "ve-web1"),
            "an older unifs's"
        );
        assert!(!is_table_of("unifs-lock-42-ve-web10", "ve-web1"));
        assert!(
            !is_table_of("unifs-lock-ve-web1-5", "ve-web1"),
            "guest web1-5's"
        );
        assert!(!is_table_of("unifs-lock-42-ve-web1", "ve-web1-5"));
        assert!(!is_table_of("unifs-lock--ve-web1", "ve-web1"));
        assert!(!is_table_of("other-42-ve-web1", "ve-web1"));
    }

    #[test]
    fn a_vlan_filtering_bridge_is_refused() {
        let line = |setting: &str| {
            format!(
                "7: br0: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN \\    \
                 link/ether 46:2d:46:81:4d:a3 brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    \
                 bridge forward_delay 1500 {setting}stp_state 0 priority 32768"
            )
        };
        assert!(!filters_vlans(&line("")), "a kernel without the setting");
        assert!(check_bridge(&line("vlan_filtering 0 "), "br0", Names::Options).is_ok());
        let e = check_bridge(&line("vlan_filtering 1 "), "br0", Names::Config)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[net] lock_mac on [net] bridge br0: the bridge filters VLANs"),
            "{e}"
        );
    }

    #[test]
    fn a_port_is_locked_only_where_ip_says_so() {
        let with = |data: &str| {
            format!(
                r#"[{{"ifname":"ve-web1","linkinfo":{{"info_kind":"veth","info_slave_kind":"bridge","info_slave_data":{{{data}}}}}}}]"#
            )
        };
        assert!(is_locked(&with(r#""learning":false,"locked":true"#)));
        assert!(!is_locked(&with(r#""learning":false,"locked":false"#)));
        assert!(
            !is_locked(&with(r#""learning":false,"isolated":false"#)),
            "a kernel before 5.18 has no such key"
        );
        assert!(!is_locked("not json"));
    }
}
