//! The exec trampoline: a tiny static x86-64 program in a sealed memfd that
//! execs `argv[1]` with `argv[2..]`. The guest's command is exec'd through it
//! so that, at that exec, /proc/self/exe is this anonymous file and not the
//! host's unifs binary: a guest script whose interpreter is /proc/self/exe
//! would otherwise run, and could then overwrite, the host's binary.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// x86-64 code of the exec trampoline, assembled from:
///   mov edi,FD; mov esi,2; mov edx,1; mov eax,72; syscall  (fcntl F_SETFD FD_CLOEXEC)
///   mov rax,[rsp]; mov rdi,[rsp+16]; lea rsi,[rsp+24]; lea rdx,[rsp+rax*8+16]
///   mov eax,59; syscall                                     (execve)
///   neg eax; shl rax,8; mov al,'X'; push rax
///   mov edi,FD; mov rsi,rsp; mov edx,5; mov eax,1; syscall  (write "X" + errno)
///   mov edi,127; mov eax,231; syscall                       (exit_group 127)
/// FD, the report pipe, is patched in at [`REPORT_FD_AT`].
const TRAMPOLINE_CODE: [u8; 89] = [
    0xbf, 0x00, 0x00, 0x00, 0x00, 0xbe, 0x02, 0x00, 0x00, 0x00, 0xba, 0x01, 0x00, 0x00, 0x00, 0xb8,
    0x48, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x48, 0x8b, 0x04, 0x24, 0x48, 0x8b, 0x7c, 0x24, 0x10, 0x48,
    0x8d, 0x74, 0x24, 0x18, 0x48, 0x8d, 0x54, 0xc4, 0x10, 0xb8, 0x3b, 0x00, 0x00, 0x00, 0x0f, 0x05,
    0xf7, 0xd8, 0x48, 0xc1, 0xe0, 0x08, 0xb0, 0x58, 0x50, 0xbf, 0x00, 0x00, 0x00, 0x00, 0x48, 0x89,
    0xe6, 0xba, 0x05, 0x00, 0x00, 0x00, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xbf, 0x7f, 0x00,
    0x00, 0x00, 0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
];

/// Where the code holds the report fd (the 32-bit operands of `mov edi,FD`).
const REPORT_FD_AT: [usize; 2] = [1, 0x3a];

/// A minimal static ELF around [`TRAMPOLINE_CODE`] with `report_fd` patched
/// in: header, one R+X load segment, code.
fn trampoline_elf(report_fd: i32) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let len = HEADERS + TRAMPOLINE_CODE.len() as u64;
    let mut elf = Vec::with_capacity(len as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    for word in [0, BASE, BASE, len, len, 0x1000u64] {
        // offset, vaddr, paddr, filesz, memsz, align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    let mut code = TRAMPOLINE_CODE;
    for at in REPORT_FD_AT {
        code[at..at + 4].copy_from_slice(&report_fd.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

/// A sealed memfd holding the trampoline, or None where it cannot be had
/// (not x86-64, no memfd). `report_fd` must stay open across the exec into
/// it (no close-on-exec): the trampoline marks it close-on-exec, so the
/// command's exec closes it, and writes `X` and the errno to it if that exec
/// fails (a missing `#!` interpreter or ELF loader, ENOEXEC), which would
/// otherwise be a silent exit 127 after the launcher has let go.
pub fn trampoline(report_fd: i32) -> Option<OwnedFd> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    let create = |flags: libc::c_uint| {
        // SAFETY: the name is a NUL-terminated literal; flags are plain bits.
        let fd = unsafe { libc::memfd_create(c"unifs-exec".as_ptr(), flags) };
        // SAFETY: a non-negative return is a new fd nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+) keeps it executable under vm.memfd_noexec=1.
    let fd = create(base | libc::MFD_EXEC).or_else(|| create(base))?;
    nix::unistd::write(&fd, &trampoline_elf(report_fd)).ok()?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an int argument, no pointers.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    (rc == 0).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trampoline_elf_is_well_formed() {
        let elf = trampoline_elf(0x1234);
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf.len(), 64 + 56 + TRAMPOLINE_CODE.len());
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        let filesz = u64::from_le_bytes(elf[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz as usize, elf.len());
        for at in REPORT_FD_AT {
            assert_eq!(elf[120 + at - 1], 0xbf, "mov edi, imm32");
            assert_eq!(elf[120 + at..124 + at], 0x1234i32.to_le_bytes());
        }
    }
}
