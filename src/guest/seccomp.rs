//! The guest's syscall filter (seccomp BPF): a short deny list of syscalls
//! that capabilities do not fence, for a guest whose root is the host's
//! root. Everything else is allowed, so a guest distribution that uses a
//! new syscall keeps working (nspawn and Docker list what is allowed
//! instead, and break on new syscalls until updated).
//!
//! Refused with EPERM, on x86-64 and on its i386 compat ABI alike:
//! - the kernel keyring (`keyctl`, `add_key`, `request_key`): it is not
//!   namespaced, and uid 0 in a guest is uid 0's keyring on the host;
//! - `io_uring_*`: its operations bypass any filter, and it has been the
//!   source of many kernel holes;
//! - `userfaultfd`, `bpf`, `perf_event_open`: what sysctls may leave open to
//!   anyone, and exploits' favourite tools;
//! - `syslog`: the host's kernel log, unless the host set dmesg_restrict;
//! - `open_by_handle_at`: opens any file of a filesystem by handle, past
//!   the guest's root, given `CAP_DAC_READ_SEARCH` (Docker's "shocker");
//! - `kexec_load`, `kexec_file_load`: `CAP_SYS_BOOT` also lets a process
//!   boot the host into another kernel; refused, `cap_add = ["sys_boot"]`
//!   gives a guest `reboot(2)` alone, which ends only its PID namespace;
//! - unless [`SyscallFilter::AllowUserns`]: `unshare` and `clone` with
//!   `CLONE_NEWUSER`, where guest root would get every capability back over
//!   namespaces of its own. `clone3` gets ENOSYS (its flags are in memory a
//!   filter cannot read), so libc falls back to `clone`.
//!
//! x32 syscalls get ENOSYS. Other architectures have no filter yet (a guest
//! there starts only with the filter off).

use super::spec::SyscallFilter;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const CLONE_NEWUSER: u32 = 0x1000_0000;

/// One ABI's syscall numbers.
struct Abi {
    arch: u32,
    denied: &'static [u32],
    clone: u32,
    clone3: u32,
    unshare: u32,
    /// x86-64's syscall numbers at and above this are another ABI's (x32).
    foreign_from: Option<u32>,
}

/// keyctl, add_key, request_key, io_uring_setup, io_uring_enter,
/// io_uring_register, userfaultfd, bpf, perf_event_open, syslog,
/// open_by_handle_at, kexec_load, kexec_file_load (not on i386): in that
/// order, per ABI.
const X86_64: Abi = Abi {
    arch: AUDIT_ARCH_X86_64,
    denied: &[
        250, 248, 249, 425, 426, 427, 323, 321, 298, 103, 304, 246, 320,
    ],
    clone: 56,
    clone3: 435,
    unshare: 272,
    foreign_from: Some(X32_SYSCALL_BIT),
};

const I386: Abi = Abi {
    arch: AUDIT_ARCH_I386,
    denied: &[288, 286, 287, 425, 426, 427, 374, 357, 336, 103, 342, 283],
    clone: 120,
    clone3: 435,
    unshare: 310,
    foreign_from: None,
};

// Classic BPF, as seccomp runs it (linux/filter.h, linux/bpf_common.h).
/// BPF_LD | BPF_W | BPF_ABS.
const LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K, and so on.
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;

// Offsets into struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of the first argument (little-endian).
const ARG0_LO: u32 = 16;

const ALLOW: u32 = 0x7fff_0000;
const KILL_PROCESS: u32 = 0x8000_0000;
const fn errno(e: i32) -> u32 {
    0x0005_0000 | (e as u32 & 0xffff)
}

pub type Insn = libc::sock_filter;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The filter for `mode`; `None` when there is none to install (off, or an
/// architecture without a filter yet).
/// Whether this build has a filter for its architecture.
pub const BUILT: bool = cfg!(target_arch = "x86_64");

pub fn program(mode: SyscallFilter) -> Option<Vec<Insn>> {
    if mode == SyscallFilter::Off || !BUILT {
        return None;
    }
    let userns = mode == SyscallFilter::AllowUserns;
    let mut p = vec![insn(LD_W_ABS, 0, 0, ARCH)];
    for abi in [X86_64, I386] {
        let body = abi_body(&abi, userns);
        let skip = u8::try_from(body.len()).expect("an ABI's part fits a jump");
        p.push(insn(JEQ_K, 0, skip, abi.arch));
        p.extend(body);
    }
    // No other ABI can reach an x86-64 kernel.
    p.push(insn(RET_K, 0, 0, KILL_PROCESS));
    Some(p)
}

/// One ABI's part: it always ends in a return, so the part after it is
/// reached only by the jump over it.
fn abi_body(abi: &Abi, userns: bool) -> Vec<Insn> {
    let mut p = vec![insn(LD_W_ABS, 0, 0, NR)];
    if let Some(from) = abi.foreign_from {
        p.push(insn(JGE_K, 0, 1, from));
        p.push(insn(RET_K, 0, 0, errno(libc::ENOSYS)));
    }
    for &nr in abi.denied {
        p.push(insn(JEQ_K, 0, 1, nr));
        p.push(insn(RET_K, 0, 0, errno(libc::EPERM)));
    }
    if !userns {
        p.push(insn(JEQ_K, 0, 1, abi.clone3));
        p.push(insn(RET_K, 0, 0, errno(libc::ENOSYS)));
        p.push(insn(JEQ_K, 1, 0, abi.clone));
        p.push(insn(JEQ_K, 0, 3, abi.unshare));
        p.push(insn(LD_W_ABS, 0, 0, ARG0_LO));
        p.push(insn(JSET_K, 0, 1, CLONE_NEWUSER));
        p.push(insn(RET_K, 0, 0, errno(libc::EPERM)));
    }
    p.push(insn(RET_K, 0, 0, ALLOW));
    p
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Runs a filter as the kernel would on (arch, nr, arg0).
    fn run(p: &[Insn], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            let jump = |taken: bool| if taken { i.jt } else { i.jf } as usize;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0_LO => arg0,
                        k => panic!("load of offset {k}"),
                    }
                }
                JEQ_K => pc += jump(acc == i.k),
                JGE_K => pc += jump(acc >= i.k),
                JSET_K => pc += jump(acc & i.k != 0),
                RET_K => return i.k,
                c => panic!("unknown instruction {c:#x}"),
            }
        }
    }

    const EPERM: u32 = errno(libc::EPERM);
    const ENOSYS: u32 = errno(libc::ENOSYS);

    #[test]
    fn the_default_filter_refuses_the_list_and_user_namespaces_on_both_abis() {
        let p = program(SyscallFilter::Default).unwrap();
        for abi in [X86_64, I386] {
            for &nr in abi.denied {
                assert_eq!(run(&p, abi.arch, nr, 0), EPERM, "{:#x} {nr}", abi.arch);
            }
            assert_eq!(run(&p, abi.arch, abi.clone3, 0), ENOSYS);
            for nr in [abi.clone, abi.unshare] {
                assert_eq!(run(&p, abi.arch, nr, CLONE_NEWUSER | 0x11), EPERM);
                // fork (SIGCHLD), threads, other namespaces: caps decide.
                assert_eq!(run(&p, abi.arch, nr, 0x11), ALLOW);
                assert_eq!(run(&p, abi.arch, nr, 0x0002_0000), ALLOW);
            }
            // read, write, open(at), execve: allowed.
            for nr in [0, 1, 3, 4, 5, 11, 59, 257] {
                assert_eq!(run(&p, abi.arch, nr, CLONE_NEWUSER), ALLOW, "{nr}");
            }
        }
        // The numbers differ between the ABIs: x86-64's keyctl is i386's
        // fadvise64, allowed there.
        assert_eq!(run(&p, AUDIT_ARCH_I386, 250, 0), ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1, 0), ENOSYS);
        assert_eq!(run(&p, 0xC000_00B7, 0, 0), KILL_PROCESS); // aarch64
    }

    #[test]
    fn allow_userns_lets_user_namespaces_through_and_off_has_no_filter() {
        let p = program(SyscallFilter::AllowUserns).unwrap();
        for abi in [X86_64, I386] {
            assert_eq!(run(&p, abi.arch, abi.unshare, CLONE_NEWUSER), ALLOW);
            assert_eq!(run(&p, abi.arch, abi.clone, CLONE_NEWUSER), ALLOW);
            assert_eq!(run(&p, abi.arch, abi.clone3, 0), ALLOW);
            assert_eq!(run(&p, abi.arch, abi.denied[0], 0), EPERM);
        }
        assert!(program(SyscallFilter::Off).is_none());
    }

    #[test]
    fn the_x86_64_numbers_are_the_c_librarys() {
        let want = [
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_userfaultfd,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_syslog,
            libc::SYS_open_by_handle_at,
            libc::SYS_kexec_load,
            libc::SYS_kexec_file_load,
        ];
        let have: Vec<libc::c_long> = X86_64.denied.iter().map(|&n| n.into()).collect();
        assert_eq!(have, want);
        assert_eq!(libc::c_long::from(X86_64.clone), libc::SYS_clone);
        assert_eq!(libc::c_long::from(X86_64.clone3), libc::SYS_clone3);
        assert_eq!(libc::c_long::from(X86_64.unshare), libc::SYS_unshare);
    }
}
