//! Session 51 (netfix): `guest list`'s one listing of the host's links is
//! older than the records it reads later (16 guests looked at at once, up
//! to a second for each stalled root): a guest started or restarted since
//! has a host end it lacks, or of another index. Such a guest's host end
//! is looked for again, alone. Everything made is named `s51…` with a
//! number of the pid and removed by guards.

use crate::guest::harness::{ok, stderr, wait_bounded, KillOnDrop};
use crate::guest::review_s11_life::Continue;
use crate::review_s31_doubts::{stopped, within_60s};
use crate::review_s43_netnat::{may_run, n, veth_guest_unstarted};
use crate::review_s51_netlist::beside;
use std::process::Stdio;
use std::time::Duration;

/// A guest `s51{N}p` runs, `s51{N}q` beside it; `guest list` looks at one
/// at a time (UNIFS_TEST_LIST_LOOKS), and stops after its listing of the
/// links at p's look (UNIFS_TEST_HOST_LINKS_STOP) while q is started, then
/// restarted (a new host end, a new index): q is listed running with its
/// host end both times. Before, with no `ve-` of q in the listing, or
/// another index, q showed running without `host_interface`.
#[test]
fn s51_list_names_the_host_end_of_a_guest_started_after_its_listing() {
    let test = "s51_list_names_the_host_end_of_a_guest_started_after_its_listing";
    if !may_run(test) {
        return;
    }
    let n = n();
    let g = veth_guest_unstarted(&format!("s51{n}p"), &format!("10.68.{n}"), false);
    let other = veth_guest_unstarted(&format!("s51{n}q"), &format!("10.69.{n}"), false);
    let h = beside(&g, other);
    ok(&g.unifs(&["start", &g.name]));
    for (then, what) in [("start", "started"), ("restart", "restarted")] {
        let mut list = g.cmd(&["list", "--json"]);
        list.env("UNIFS_TEST_LIST_LOOKS", "1")
            .env("UNIFS_TEST_HOST_LINKS_STOP", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let list = KillOnDrop(Some(list.spawn().unwrap()));
        let pid = list.0.as_ref().unwrap().id();
        let go_on = Continue(pid as i32);
        assert!(within_60s(|| stopped(pid)), "list never listed the links");
        let o = g.unifs(&[then, &h.name]);
        assert!(o.status.success(), "{then}: {}", stderr(&o));
        drop(go_on);
        let o = wait_bounded(list, Duration::from_secs(60));
        let out = ok(&o);
        let all: serde_json::Value = serde_json::from_str(&out).unwrap();
        let listed = all
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == *h.name);
        let listed = listed.unwrap_or_else(|| panic!("{} not listed: {out}", h.name));
        assert_eq!(listed["running"], true, "{out}");
        assert_eq!(
            listed["host_interface"],
            format!("ve-{}", h.name),
            "{} {what} after list's listing of the links: {out}",
            h.name
        );
    }
    for name in [&h.name, &g.name] {
        ok(&g.unifs(&["stop", name]));
    }
}
