//! The extended attributes rein keeps on cgroup directories (cgroupfs supports `trusted.*`):
//! a container's priority class, its kind, creation intents and change journals.

use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use super::CgroupError;

/// Runs one xattr system call on `dir` with `key`; a non-zero return is the `op` error.
fn xattr_call(
    dir: &Path,
    key: &str,
    op: &'static str,
    call: impl FnOnce(&std::ffi::CStr, &std::ffi::CStr) -> libc::c_int,
) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Io {
        op,
        path: dir.to_owned(),
        source,
    };
    let invalid = || err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    let p = CString::new(dir.as_os_str().as_bytes()).map_err(|_| invalid())?;
    let k = CString::new(key).map_err(|_| invalid())?;
    if call(&p, &k) != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn set(dir: &Path, key: &str, value: &str) -> Result<(), CgroupError> {
    set_flags(dir, key, value, 0)
}

/// `setxattr(2)` with `flags` (`XATTR_CREATE`: fail with EEXIST if the key is set).
pub fn set_flags(dir: &Path, key: &str, value: &str, flags: i32) -> Result<(), CgroupError> {
    xattr_call(dir, key, "setting xattr on", |p, k| {
        // SAFETY: p and k are NUL-terminated; value points to value.len() readable bytes.
        unsafe {
            libc::setxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    })
}

/// The names of the extended attributes on `dir` (empty when they cannot be read).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(p) = CString::new(dir.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // Names are NUL-separated; 64 KiB is the kernel's limit for the whole list.
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let Ok(n) = usize::try_from(n) else {
        return Vec::new();
    };
    buf[..n]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .filter_map(|k| String::from_utf8(k.to_vec()).ok())
        .collect()
}

pub fn remove(dir: &Path, key: &str) -> Result<(), CgroupError> {
    xattr_call(dir, key, "removing xattr from", |p, k| {
        // SAFETY: p and k are NUL-terminated strings that outlive the call.
        unsafe { libc::removexattr(p.as_ptr(), k.as_ptr()) }
    })
}

pub fn get(dir: &Path, key: &str) -> Option<String> {
    let p = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let k = CString::new(key).ok()?;
    // rein's values are short (a priority class, a change's journal): 16 KiB is plenty.
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: p and k are NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::getxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    String::from_utf8(buf).ok()
}
