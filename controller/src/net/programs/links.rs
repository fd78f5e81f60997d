//! The links an earlier agent pinned, taken over: each is switched to this agent's program
//! (BPF_LINK_UPDATE, atomic: the cgroup is never without a program), so an upgraded agent
//! runs its own code, on the maps it loaded, from its first second. Without this an agent
//! would adopt the old programs forever, and a fix to the datapath (or a map whose layout
//! changed, which this agent made anew) would never reach the cgroups attached before.
//!
//! A pinned link is taken over only where it is attached to the cgroup the agent means: an
//! agent whose root moved under the same bpf_dir (a changed `root`, or the layout before
//! rein-containers.service) would otherwise keep its programs on the old root, and leave
//! every container of the new one unshaped and uncounted.
//!
//! aya keeps a link's descriptor private and its link info leaves out the cgroup, so the
//! system calls are made here.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use super::{ProgramError, pin_err};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `BPF_LINK_TYPE_CGROUP` (enum bpf_link_type).
const LINK_TYPE_CGROUP: u32 = 3;

/// `union bpf_attr` as BPF_OBJ_GET_INFO_BY_FD reads it.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_link_info` as the kernel fills it for a cgroup link: type, id
/// and program id, then (the union is 8-byte aligned) the cgroup's id and attach type.
#[repr(C)]
#[derive(Default)]
struct CgroupLinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    cgroup_id: u64,
    attach_type: u32,
    _pad2: u32,
}

/// `union bpf_attr` as BPF_OBJ_GET reads it (include/uapi/linux/bpf.h).
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` as BPF_LINK_UPDATE reads it.
#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// One `bpf(2)` call with `attr`; the syscall's result or its error.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, fully initialised prefix of `union bpf_attr` for `cmd` that
    // lives across the call; the kernel zero-extends the rest.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the link pinned at `pin`.
fn open(pin: &Path) -> std::io::Result<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The id (inode) of the cgroup the link pinned at `pin` is attached to: 0 once that cgroup
/// is gone (the kernel detached the link), `None` for a link of another kind.
pub fn linked_cgroup(pin: &Path) -> std::io::Result<Option<u64>> {
    let link = open(pin)?;
    let mut info = CgroupLinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(link.as_raw_fd()).unwrap_or(u32::MAX),
        info_len: std::mem::size_of::<CgroupLinkInfo>() as u32,
        info: &raw mut info as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((info.kind == LINK_TYPE_CGROUP).then_some(info.cgroup_id))
}

/// Switches the link pinned at `pin` to the program `prog` (of the same type and attach
/// type as the one it runs).
pub(super) fn update(pin: &Path, prog: BorrowedFd<'_>) -> Result<(), ProgramError> {
    let link = open(pin).map_err(|e| pin_err(pin, &e))?;
    let as_u32 = |fd: i32| u32::try_from(fd).unwrap_or(u32::MAX);
    let mut attr = LinkUpdateAttr {
        link_fd: as_u32(link.as_raw_fd()),
        new_prog_fd: as_u32(prog.as_raw_fd()),
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop).map_err(|e| {
        pin_err(
            pin,
            &format!("switching the link to this agent's program: {e}"),
        )
    })
}

impl super::Datapath {
    /// Takes over the link pinned at `pin`, if one is attached to `cgroup`: switches it to
    /// this agent's program `name` (once per agent). False when nothing is pinned there, or
    /// when the link is on another cgroup (or on none, its cgroup gone): that link is
    /// unpinned, which detaches it, and the caller attaches anew.
    pub(super) fn take_over(
        &mut self,
        pin: &Path,
        name: &'static str,
        cgroup: &Path,
    ) -> Result<bool, ProgramError> {
        if !pin.exists() {
            self.taken_over.remove(pin);
            return Ok(false);
        }
        if self.taken_over.contains(pin) {
            return Ok(true);
        }
        let want = std::fs::metadata(cgroup)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(|e| pin_err(cgroup, &e))?;
        let linked = linked_cgroup(pin).map_err(|e| pin_err(pin, &e))?;
        if linked != Some(want) {
            tracing::warn!(
                pin = %pin.display(),
                cgroup = %cgroup.display(),
                linked = ?linked,
                "the link pinned here runs on another cgroup (the root moved, or the cgroup \
                 was made anew): unpinned, and attached to this one"
            );
            std::fs::remove_file(pin).map_err(|e| pin_err(pin, &e))?;
            return Ok(false);
        }
        self.switch_link(pin, name)?;
        self.made(pin);
        Ok(true)
    }

    /// Switches the link pinned at `pin` to this datapath's program `name` (loading it if it
    /// is not). Also how the VM tests make an agent's link look like an older rein's.
    pub fn switch_link(&mut self, pin: &Path, name: &'static str) -> Result<(), ProgramError> {
        let fail = |source| ProgramError::Program { name, source };
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(ProgramError::Missing { name })?;
        if prog.fd().is_err() {
            let skb: &mut aya::programs::CgroupSkb = prog.try_into().map_err(fail)?;
            skb.load().map_err(fail)?;
        }
        let prog = self
            .ebpf
            .program(name)
            .ok_or(ProgramError::Missing { name })?
            .fd()
            .map_err(fail)?
            .try_clone()
            .map_err(|e| fail(aya::programs::ProgramError::IOError(e)))?;
        update(pin, std::os::fd::AsFd::as_fd(&prog))
    }

    /// Remembers a link that runs this agent's program (pinned by it, or taken over). The
    /// set forgets pins that are gone (containers unregistered) once it grows, so it stays
    /// as large as the live pins.
    pub(super) fn made(&mut self, pin: &Path) {
        // At each power of two from 1024 on: amortised, however many pins are live.
        if self.taken_over.len() >= 1024 && self.taken_over.len().is_power_of_two() {
            self.taken_over.retain(|p| p.exists());
        }
        self.taken_over.insert(pin.to_owned());
    }
}
