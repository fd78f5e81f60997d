//! Which managed cgroups a packet or a task belongs to: its [`Chain`], nearest first.
//!
//! rein's limits and figures cover the whole subtree below a managed cgroup, whatever a
//! process inside does to its own cgroup (moving into a child, a grandchild, a cgroup
//! namespace): a packet of `rein.slice/web/inner/deeper` is `web`'s, and also every managed
//! group's above `web`. The kernel names a socket's ancestors with
//! `bpf_skb_ancestor_cgroup_id(skb, level)` (since 4.19) and the current task's with
//! `bpf_get_current_ancestor_cgroup_id(level)` (since 5.7); walking them costs one helper per level,
//! so the result is cached per cgroup in an LRU map (`REIN_CHAIN`) and recomputed only when
//! the agent bumps the managed set's generation (`REIN_GENERATION`), after it adds or
//! removes a managed cgroup. The hit path is two lookups.

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::map,
    maps::{Array, HashMap, LruHashMap},
    programs::SkBuffContext,
};
use aya_log_ebpf::debug;
use controller_common::{
    CHAIN_MAP_MAX_ENTRIES, Chain, MANAGED_MAP_MAX_ENTRIES, MAX_CHAIN, MAX_LEVEL,
};

#[map]
static REIN_MANAGED: HashMap<u64, u8> = HashMap::with_max_entries(MANAGED_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

#[map]
static REIN_CHAIN: LruHashMap<u64, Chain> = LruHashMap::with_max_entries(CHAIN_MAP_MAX_ENTRIES, 0);

/// The current generation of the managed set (see the module docs).
#[inline(always)]
pub fn generation() -> u64 {
    REIN_GENERATION.get(0).copied().unwrap_or(0)
}

/// Whether `id` is a cgroup rein manages.
#[inline(always)]
pub fn is_managed(id: u64) -> bool {
    // SAFETY: a lookup; the value is not used.
    id != 0 && unsafe { REIN_MANAGED.get(&id) }.is_some()
}

/// Builds a chain from the ancestors `ancestor(level)` gives for levels 0 (the root) up to
/// the cgroup's own (`Some(0)` past it), keeping the deepest [`MAX_CHAIN`] managed ones,
/// nearest first. False with it when an ancestor could not be read (`None`): the chain may
/// miss levels, and must not be cached.
#[inline(always)]
fn walk(generation: u64, ancestor: impl Fn(u32) -> Option<u64>) -> (Chain, bool) {
    // Top-down, so `found` ends with the nearest; at most MAX_CHAIN kept (the agent refuses
    // deeper nesting, so dropping the topmost never happens in practice).
    let mut found = [0u64; MAX_CHAIN];
    let mut n = 0usize;
    let mut level = 0;
    let mut complete = true;
    while level < MAX_LEVEL {
        let Some(id) = ancestor(level) else {
            complete = false;
            break;
        };
        if id == 0 {
            break;
        }
        if is_managed(id) {
            if n == MAX_CHAIN {
                let mut i = 1;
                while i < MAX_CHAIN {
                    found[i - 1] = found[i];
                    i += 1;
                }
                n -= 1;
            }
            if n < MAX_CHAIN {
                found[n] = id;
                n += 1;
            }
        }
        level += 1;
    }
    let mut chain = Chain {
        generation,
        len: n as u32,
        ..Chain::default()
    };
    let mut i = 0;
    while i < MAX_CHAIN {
        // Written so that every index is visibly in bounds: a bounds check would compile to
        // a call the verifier refuses.
        let j = n.wrapping_sub(1 + i);
        if i < n && j < MAX_CHAIN {
            chain.ids[i] = found[j];
        }
        i += 1;
    }
    (chain, complete)
}

/// The chain of the cgroup `leaf`, from the cache or by `walk`ing its ancestors.
#[inline(always)]
fn cached(leaf: u64, ancestor: impl Fn(u32) -> Option<u64>) -> (Chain, bool) {
    let generation = generation();
    // SAFETY: lookup; the value is copied out at once.
    if let Some(c) = unsafe { REIN_CHAIN.get(&leaf) }
        && c.generation == generation
    {
        return (*c, false);
    }
    let (chain, complete) = walk(generation, ancestor);
    if complete {
        let _ = REIN_CHAIN.insert(&leaf, &chain, 0);
    }
    (chain, true)
}

/// The chain of the packet's socket.
#[inline(always)]
pub fn of_skb(ctx: &SkBuffContext) -> Chain {
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: `skb` is this invocation's context.
    let leaf = unsafe { bpf_skb_cgroup_id(skb) };
    let (chain, walked) = cached(leaf, |level| {
        // SAFETY: as above; a level past the socket's cgroup gives 0.
        Some(unsafe { bpf_skb_ancestor_cgroup_id(skb, level as i32) })
    });
    // Once per cgroup and generation of the managed set: the one log record of the packet
    // path (aya-log's formatting is large, and the verifier checks it on every path).
    if walked && chain.len > 0 {
        debug!(
            ctx,
            "rein: cgroup {} counts for {} managed cgroup(s), nearest {}",
            leaf,
            chain.len,
            chain.ids[0]
        );
    }
    chain
}

/// The chain of the cgroup `leaf` whose ancestor at each level `ancestor` reads.
#[inline(always)]
pub fn of_cgroup(leaf: u64, ancestor: impl Fn(u32) -> Option<u64>) -> Chain {
    cached(leaf, ancestor).0
}
