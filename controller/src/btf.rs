//! Member offsets of kernel structs, read from the kernel's own BTF (`/sys/kernel/btf/vmlinux`)
//! when the agent starts.
//!
//! rein's tracing programs read `task_struct` and friends with `bpf_probe_read_kernel` at
//! offsets they get from a map, because Rust eBPF has no CO-RE relocations: the agent resolves
//! the offsets for the running kernel here, so one object works on 6.1 and 6.12 alike.
//!
//! Why not a crate: aya-obj parses BTF but keeps member offsets private, and btf-rs is
//! LGPL, which a statically linked agent would have to carry. Only what offset lookup needs
//! is parsed: the header, the string section, and every type record's length so the walk
//! stays aligned.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not BTF: {0}")]
    Format(String),
    #[error("the kernel's BTF has no struct {0}")]
    NoStruct(String),
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("unexpected kernel struct layout: {0}")]
    Layout(String),
}

/// Kinds whose records are followed by extra data (see the kernel's btf.rst).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// Struct and union members by struct name: member name -> byte offset. Anonymous members
/// (unnamed unions inside a struct) are flattened into their parent, as C sees them.
pub struct Offsets {
    structs: HashMap<String, HashMap<String, u32>>,
}

impl Offsets {
    /// Parses the running kernel's BTF, keeping the structs named in `wanted`.
    pub fn from_kernel(wanted: &[&str]) -> Result<Self, BtfError> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&data, wanted)
    }

    /// The byte offset of `member` in `struct name`.
    pub fn of(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        self.structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?
            .get(member)
            .copied()
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))
    }

    /// The offset of the first of `members` that exists (fields renamed across kernels, such
    /// as `task_struct.state` becoming `__state` in 5.14).
    pub fn of_any(&self, name: &str, members: &[&str]) -> Result<u32, BtfError> {
        members
            .iter()
            .find_map(|m| self.of(name, m).ok())
            .ok_or_else(|| BtfError::NoMember(name.into(), members.join(" or ")))
    }

    pub fn parse(data: &[u8], wanted: &[&str]) -> Result<Self, BtfError> {
        let bad = |what: &str| BtfError::Format(what.to_owned());
        let u32_at = |off: usize| -> Result<u32, BtfError> {
            let b = data.get(off..off + 4).ok_or_else(|| bad("truncated"))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(bad("bad magic (or a big-endian kernel)"));
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or_else(|| bad("string section out of bounds"))?;
        let name = |off: u32| -> &[u8] {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            &s[..end]
        };
        // Type ids start at 1; keep each struct's members (as string offsets, cheap: vmlinux
        // has tens of thousands of types) to flatten anonymous ones.
        struct Raw {
            name: u32,
            members: Vec<(u32, u32, u32)>, // name, type id, byte offset
        }
        let mut types: Vec<Option<Raw>> = vec![None];
        let mut pos = type_off;
        let end = type_off + type_len;
        while pos < end {
            let name_off = u32_at(pos)?;
            let info = u32_at(pos + 4)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kflag = info >> 31 == 1;
            pos += 12;
            let mut raw = None;
            pos += match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let m = pos + 12 * i;
                        let bits = u32_at(m + 8)?;
                        // With kflag the low 24 bits are the bit offset (bitfields).
                        let bit_off = if kflag { bits & 0x00ff_ffff } else { bits };
                        members.push((u32_at(m)?, u32_at(m + 4)?, bit_off / 8));
                    }
                    raw = Some(Raw {
                        name: name_off,
                        members,
                    });
                    12 * vlen
                }
                _ => 0,
            };
            types.push(raw);
        }
        // Flattens anonymous struct/union members into `out` at `base`.
        fn flatten(
            types: &[Option<Raw>],
            name: &dyn Fn(u32) -> String,
            id: u32,
            base: u32,
            depth: u32,
            out: &mut HashMap<String, u32>,
        ) {
            let Some(Some(t)) = types.get(id as usize) else {
                return;
            };
            for &(member, ty, off) in &t.members {
                let member = name(member);
                if member.is_empty() {
                    if depth < 8 {
                        flatten(types, name, ty, base + off, depth + 1, out);
                    }
                } else {
                    out.entry(member).or_insert(base + off);
                }
            }
        }
        let text = |off: u32| String::from_utf8_lossy(name(off)).into_owned();
        let mut structs = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            let Some(t) = t else { continue };
            let n = text(t.name);
            if wanted.contains(&n.as_str()) && !structs.contains_key(&n) {
                let mut members = HashMap::new();
                flatten(&types, &text, id as u32, 0, 0, &mut members);
                structs.insert(n, members);
            }
        }
        Ok(Self { structs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build machine's own kernel has BTF: the members rein's programs read exist.
    #[test]
    fn this_kernel_has_the_members_rein_reads() {
        let wanted = ["task_struct", "css_set", "cgroup", "kernfs_node"];
        let Ok(o) = Offsets::from_kernel(&wanted) else {
            eprintln!("no /sys/kernel/btf/vmlinux here; skipped");
            return;
        };
        let pid = o.of("task_struct", "pid").unwrap();
        let cgroups = o.of("task_struct", "cgroups").unwrap();
        assert!(pid > 0 && cgroups > pid, "pid {pid}, cgroups {cgroups}");
        o.of_any("task_struct", &["__state", "state"]).unwrap();
        o.of("css_set", "dfl_cgrp").unwrap();
        o.of("cgroup", "kn").unwrap();
        o.of("kernfs_node", "id").unwrap();
        assert!(matches!(
            o.of("task_struct", "no_such_member"),
            Err(BtfError::NoMember(..))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Offsets::parse(b"", &[]).is_err());
        assert!(Offsets::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0], &[]).is_err());
        let mut truncated = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        truncated.extend_from_slice(&[0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Offsets::parse(&truncated, &[]).is_err());
    }
}
